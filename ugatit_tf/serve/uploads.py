"""Guards and decoding for the photos people upload to the page.

In this order, before anything is decoded: the size in bytes (413), the type sniffed from the
first bytes whatever the file is called (415; JPEG, PNG, GIF, BMP and WebP are read), the
headers (400 when malformed), the pixel budget of every frame and a JPEG's number of scans
(413), read by `ugatit_tf.common.images.check_image_budget`. Then TensorFlow decodes the first
frame to RGB, as the SavedModel signatures do, and the EXIF orientation of phone photos is
applied.
"""

from __future__ import annotations

import io
import re

import numpy as np

from ugatit_tf.common.images import ImageOverBudget, ImageRejected, check_image_budget
from ugatit_tf.serve.models import PredictError

ACCEPTED = "JPEG, PNG, GIF, BMP or WebP"
SIGNATURE_FORMATS = ("jpeg", "png", "gif", "bmp")  # what the SavedModel's bytes signatures read


def sniff(data: bytes) -> str | None:
    """The image format of `data` from its magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _what_is_it(data: bytes) -> str:
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace")
        if brand in ("heic", "heix", "mif1", "msf1", "hevc"):
            return "a HEIC photo (iPhone); export it as JPEG first"
        if brand.startswith("avi"):
            return "an AVIF image"
        return "a video or HEIC/AVIF file"
    if data[:4] in (b"II*\0", b"MM\0*"):
        return "a TIFF image"
    if data[:4] == b"%PDF":
        return "a PDF document"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "an SVG/XML file"
    if head.startswith((b"<!doctype", b"<html")):
        return "a web page"
    return "not an image this page can read"


def check_upload(data: bytes, name: str, max_bytes: int, max_pixels: int) -> str:
    """The format of an upload that passes every guard; PredictError 400/413/415 otherwise,
    with one line that names the file."""
    if not data:
        raise PredictError(400, f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise PredictError(413, f"{name}: {_mb(len(data))}, more than the limit of "
                                f"{_mb(max_bytes)} for one photo")
    kind = sniff(data)
    if kind is None:
        raise PredictError(415, f"{name}: {_what_is_it(data)}; send a {ACCEPTED} photo")
    try:
        check_image_budget(data, name, max_pixels=max_pixels)
    except ImageOverBudget as e:  # too many pixels, or a JPEG of too many scans
        raise PredictError(413, str(e)) from None
    except ImageRejected as e:
        raise PredictError(400, f"{e} (a damaged or truncated {kind.upper()} file?)") from None
    return kind


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"


# EXIF orientation -> numpy operations that undo it (as PIL.ImageOps.exif_transpose does)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of an encoded image; 1 when absent or unreadable."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1
    return value if value in range(1, 9) else 1


def orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    return np.ascontiguousarray(_ORIENT[orientation](rgb)) if orientation in _ORIENT else rgb


def decode_upload(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, int]:
    """(RGB uint8 [H, W, 3] of a checked upload's first frame, turned upright as its EXIF
    orientation says; that orientation, 1 when none)."""
    import tensorflow as tf
    try:
        rgb = tf.io.decode_image(data, channels=3, expand_animations=False,
                                 dtype=tf.uint8).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        raise PredictError(400, f"{name}: cannot be decoded ({_first_line(e.message)}); "
                                f"is the file complete?") from None
    if rgb.ndim != 3 or rgb.shape[0] * rgb.shape[1] == 0 or (
            rgb.shape[0] * rgb.shape[1] > max_pixels):
        raise PredictError(400, f"{name}: decoded to {rgb.shape[1]}x{rgb.shape[0]} pixels; "
                                f"expected between 1 and {max_pixels}")
    orientation = exif_orientation(data)
    return orient(rgb, orientation), orientation


def _first_line(message: str) -> str:
    """The first line of a TensorFlow error without its internals ({{function_node}}, [Op:])."""
    message = re.sub(r"\{\{.*?\}\}|\[Op:[^\]]*\]", "", message).strip()
    return message.splitlines()[0][:200] if message else "unknown error"
