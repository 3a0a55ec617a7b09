"""Pixels and image headers: uint8 <-> [-1, 1] conversion, and a pixel budget read from headers.

The model works on x = pixel / 127.5 - 1. Back to pixels, (x + 1) * 127.5, there are two
roundings in use and both are deliberate:

- "truncate": the original's test phase (`inverse_transform` then `astype(uint8)` when the image
  is saved). The test phase uses it so that its PNGs equal the original's byte for byte.
- "nearest": round half to even, then clip. Everything that is not a re-run of the original
  (photos, the web page, samples, exports' in-graph twin `export.pixels.to_uint8`) uses it: it is
  the unbiased choice, 0.5 levels closer on average.

Image headers (`read_image_header`, `check_image_budget`, `check_image_file`) read the size of
every frame of a JPEG, PNG/APNG, GIF, WebP, BMP or TIFF from its headers alone, without
decoding or inflating anything, so an image that would take too much memory to decode is
refused first. The budget and its rules are in docs/reliability.md ("Images").
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import NamedTuple

import numpy as np

from ugatit_tf.common.files import describe_mode

ROUNDINGS = ("nearest", "truncate")


def to_uint8(images, rounding: str = "nearest") -> np.ndarray:
    """[-1, 1] floats (any shape) -> uint8 pixels, clipped to [0, 255]."""
    x = (np.asarray(images, np.float64) + 1.0) * 127.5
    if rounding == "nearest":
        x = np.rint(x)
    elif rounding != "truncate":
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
    return np.clip(x, 0, 255).astype(np.uint8)


def from_uint8(pixels) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (pixel / 127.5 - 1, the original's preprocessing)."""
    return np.asarray(pixels, np.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------
# Image headers and the pixel budget
# ---------------------------------------------------------------------------

DEFAULT_MAX_PIXELS = 50_000_000
"""Pixels one image may decode to, all its frames together (largest frame x frames): 50
megapixels, 150 MB as RGB uint8. Training data, test data, `--phase check` and `--input` photos
use it; the SavedModel signatures have their own, stricter --max_pixels (4096 x 4096)."""

ACCEPTED_FORMATS = "JPEG, PNG (APNG), GIF, WebP, BMP or TIFF"


class ImageRejected(ValueError):
    """An image refused before decoding: unknown format, malformed header, or over the budget.
    The message is one line that starts with the image's name."""


class ImageOverBudget(ImageRejected):
    """An image with sound headers that would cost too much to decode: more pixels (largest
    frame x frames) than allowed, or a JPEG of more than MAX_JPEG_SCANS scans."""


# A progressive JPEG is decoded scan by scan, each pass over the whole image's coefficients:
# 33-byte scans repeated 1,000 times made a 41 KB file that took 6 s to decode at 2048x2048.
# Encoders write 1 scan (baseline) or about 10 (libjpeg's and mozjpeg's progressive scripts);
# an EXIF thumbnail adds its own. The count is of FF DA pairs anywhere in the file: entropy-coded
# data cannot hold them, metadata rarely does, so it never undercounts.
MAX_JPEG_SCANS = 64
# Reading the headers walks a GIF's data sub-blocks and a PNG's chunks one by one (about 1 us
# each in Python): 10 MiB of 1-byte GIF blocks took 3.3 s. Encoders write 255-byte blocks and
# chunks of kilobytes (a 10 MiB GIF has about 41,000 blocks); more than this is refused.
MAX_HEADER_BLOCKS = 500_000


class ImageHeader(NamedTuple):
    """What the headers of an image declare.

    width, height: the canvas (JPEG SOF, PNG IHDR, GIF logical screen, WebP canvas, BMP and TIFF
    first image). frames: the frames a decoder may produce (1 for a still image; GIF image
    descriptors, APNG fcTL chunks plus a default image outside the animation, WebP ANMF chunks,
    TIFF pages). max_frame_pixels: the largest area a decoder must hold for one frame: for each
    frame the canvas grown to contain it, max(W, x + w) * max(H, y + h), since a frame may be
    larger than the canvas or lie outside it."""
    format: str
    width: int
    height: int
    frames: int
    max_frame_pixels: int

    @property
    def pixels(self) -> int:
        """The budgeted size: max_frame_pixels x frames, what decoders that stack all frames at
        one size (tf.io.decode_gif/decode_image) allocate."""
        return self.max_frame_pixels * max(self.frames, 1)


class _Truncated(Exception):
    pass


class _TooFragmented(Exception):
    pass


class _Blocks:
    """Counts the GIF blocks or PNG chunks a header walk visits, up to MAX_HEADER_BLOCKS."""

    def __init__(self):
        self.n = 0

    def take(self) -> None:
        self.n += 1
        if self.n > MAX_HEADER_BLOCKS:
            raise _TooFragmented()


class _BytesSource:
    """Random access to an image held in memory."""

    def __init__(self, data):
        self.data = memoryview(data).cast("B")

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.data[offset:offset + n])

    def count(self, pattern: bytes) -> int:
        """Occurrences of `pattern` in the whole image."""
        return self.data.tobytes().count(pattern)


class _FileSource:
    """Random access to an open binary file through one 64 KiB window: the parsers seek over
    pixel data, so memory stays bounded whatever the file's size."""
    WINDOW = 1 << 16

    def __init__(self, f):
        self.f, self.start, self.buf = f, 0, b""

    def read(self, offset: int, n: int) -> bytes:
        if not (self.start <= offset and offset + n <= self.start + len(self.buf)):
            self.f.seek(offset)
            self.start, self.buf = offset, self.f.read(max(n, self.WINDOW))
        i = offset - self.start
        return self.buf[i:i + n]

    def count(self, pattern: bytes) -> int:
        """Occurrences of a 2-byte `pattern` in the whole file, read 1 MiB at a time."""
        self.f.seek(0)
        total, tail = 0, b""
        while chunk := self.f.read(1 << 20):
            total += (tail + chunk).count(pattern)
            tail = chunk[-1:]
        self.start, self.buf = 0, b""
        return total


def _need(src, offset: int, n: int) -> bytes:
    data = src.read(offset, n)
    if len(data) < n:
        raise _Truncated(f"{n} bytes at offset {offset}")
    return data


def _grown(width: int, height: int, x: int, y: int, w: int, h: int) -> int:
    """Pixels of the canvas width x height grown to hold a w x h frame at (x, y)."""
    return max(width, x + w) * max(height, y + h)


def _gif_color_table(packed: int) -> int:
    return 3 * (2 << (packed & 7)) if packed & 0x80 else 0


def _skip_sub_blocks(src, pos: int, blocks: _Blocks) -> int:
    """Position after a chain of GIF data sub-blocks (or the end of the data)."""
    while True:
        blocks.take()
        size = src.read(pos, 1)
        if not size:
            return pos
        pos += 1 + size[0]
        if size[0] == 0:
            return pos


def _gif(src) -> ImageHeader:
    width, height, packed = struct.unpack_from("<HHB", _need(src, 0, 13), 6)
    pos = 13 + _gif_color_table(packed)
    frames, largest, blocks = 0, width * height, _Blocks()
    while True:
        intro = src.read(pos, 1)
        if intro == b"!":  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(src, pos + 2, blocks)
        elif intro == b",":  # image descriptor, local colour table, LZW code size, sub-blocks
            desc = src.read(pos + 1, 9)
            if len(desc) < 9:
                break
            x, y, w, h, packed = struct.unpack("<HHHHB", desc)
            frames += 1
            largest = max(largest, _grown(width, height, x, y, w, h))
            pos = _skip_sub_blocks(src, pos + 11 + _gif_color_table(packed), blocks)
        else:  # trailer, end of data or garbage: decoders stop here
            break
    return ImageHeader("GIF", width, height, frames, largest)


def _png(src) -> ImageHeader:
    length, kind, width, height = struct.unpack(">I4sII", _need(src, 8, 16))
    if kind != b"IHDR":
        raise _Truncated("no IHDR chunk after the signature")
    pos, fctl, largest, default_animated, seen_idat = 8, 0, width * height, False, False
    blocks = _Blocks()
    while True:
        blocks.take()
        head = src.read(pos, 8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"fcTL":
            body = src.read(pos + 8, 20)
            if len(body) < 20:
                break
            _, w, h, x, y = struct.unpack(">5I", body)
            fctl += 1
            largest = max(largest, _grown(width, height, x, y, w, h))
            default_animated = default_animated or not seen_idat
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            break
        pos += 12 + length
    return ImageHeader("PNG", width, height, fctl + (0 if default_animated else 1), largest)


def _u24(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 3], "little")


def _webp_bitstream_size(src, body: int, kind: bytes) -> tuple[int, int]:
    if kind == b"VP8 ":  # frame tag (3), start code 9d 01 2a, 14-bit width and height
        data = _need(src, body, 10)
        if data[3:6] != b"\x9d\x01\x2a":
            raise _Truncated("VP8 start code missing")
        w, h = struct.unpack_from("<HH", data, 6)
        return w & 0x3FFF, h & 0x3FFF
    data = _need(src, body, 5)  # VP8L: signature 0x2f, then 14-bit width-1 and height-1
    if data[0] != 0x2F:
        raise _Truncated("VP8L signature missing")
    bits = int.from_bytes(data[1:5], "little")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def _webp(src) -> ImageHeader:
    pos, canvas, still, anmf = 12, None, None, []
    while True:
        head = src.read(pos, 8)
        if len(head) < 8:
            break
        kind, length = struct.unpack("<4sI", head)
        if kind == b"VP8X":
            data = _need(src, pos + 8, 10)
            canvas = (_u24(data, 4) + 1, _u24(data, 7) + 1)
        elif kind == b"ANMF":  # x/2, y/2, width-1, height-1 (24 bits each)
            data = _need(src, pos + 8, 12)
            anmf.append((2 * _u24(data, 0), 2 * _u24(data, 3), _u24(data, 6) + 1,
                         _u24(data, 9) + 1))
        elif kind in (b"VP8 ", b"VP8L") and still is None:
            still = _webp_bitstream_size(src, pos + 8, kind)
        pos += 8 + length + (length & 1)
    if canvas is None and still is None:
        raise _Truncated("no VP8X, VP8 or VP8L chunk")
    width, height = canvas or still
    largest = width * height
    if still is not None:
        largest = max(largest, _grown(width, height, 0, 0, *still))
    for frame in anmf:
        largest = max(largest, _grown(width, height, *frame))
    return ImageHeader("WebP", width, height, max(len(anmf), 1), largest)


_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn; not DHT, JPG, DAC


def _jpeg(src) -> ImageHeader:
    pos = 2
    while True:
        marker = _need(src, pos, 2)
        if marker[0] != 0xFF:
            raise _Truncated(f"no marker at offset {pos}")
        if marker[1] == 0xFF:  # fill byte
            pos += 1
        elif marker[1] in (0x01, 0xD8) or 0xD0 <= marker[1] <= 0xD7:  # no length
            pos += 2
        elif marker[1] in (0xD9, 0xDA):
            raise _Truncated("no SOF segment before the scan")
        elif marker[1] in _JPEG_SOF:
            height, width = struct.unpack(">HH", _need(src, pos + 5, 4))
            return ImageHeader("JPEG", width, height, 1, width * height)
        else:
            pos += 2 + struct.unpack(">H", _need(src, pos + 2, 2))[0]


def _bmp(src) -> ImageHeader:
    data = _need(src, 0, 26)
    if struct.unpack_from("<I", data, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    else:  # BITMAPINFOHEADER and later: signed 32-bit (negative height: top-down rows)
        width, height = (abs(v) for v in struct.unpack_from("<ii", data, 18))
    return ImageHeader("BMP", width, height, 1, width * height)


def _tiff_size(src, order: str, ifd: int) -> tuple[int, int, int]:
    """(width, height, next IFD offset) of the TIFF image file directory at `ifd`."""
    (count,) = struct.unpack(order + "H", _need(src, ifd, 2))
    size = {}
    for i in range(count):
        tag, kind, _, value = struct.unpack(order + "HHI4s", _need(src, ifd + 2 + 12 * i, 12))
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG, stored inline
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[:2 if kind == 3
                                                                            else 4])[0]
    (following,) = struct.unpack(order + "I", _need(src, ifd + 2 + 12 * count, 4))
    return size.get(256, 0), size.get(257, 0), following


def _tiff(src) -> ImageHeader:
    order = "<" if src.read(0, 2) == b"II" else ">"
    ifd, seen, sizes = struct.unpack(order + "I", _need(src, 4, 4))[0], set(), []
    while ifd and ifd not in seen:
        seen.add(ifd)
        try:
            width, height, ifd = _tiff_size(src, order, ifd)
        except _Truncated:
            if not sizes:
                raise
            break
        sizes.append((width, height))
    if not sizes:
        raise _Truncated("no image file directory")
    width, height = sizes[0]
    largest = max(w * h for w, h in sizes)
    return ImageHeader("TIFF", width, height, len(sizes), largest)


_FORMATS = (  # (magic, offset, name, parser)
    (b"\xff\xd8\xff", 0, "JPEG", _jpeg),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG", _png),
    (b"GIF87a", 0, "GIF", _gif),
    (b"GIF89a", 0, "GIF", _gif),
    (b"WEBP", 8, "WebP", _webp),
    (b"BM", 0, "BMP", _bmp),
    (b"II*\0", 0, "TIFF", _tiff),
    (b"MM\0*", 0, "TIFF", _tiff),
)


def _sniff(head: bytes):
    """(format name, header parser) announced by a file's first 16 bytes, or (None, None)."""
    for magic, at, kind, parse in _FORMATS:
        if head[at:at + len(magic)] == magic and (kind != "WebP" or head[:4] == b"RIFF"):
            return kind, parse
    return None, None


def image_format(head: bytes) -> str | None:
    """The image format a file's first 16 bytes announce ("JPEG", "PNG", "GIF", "WebP", "BMP",
    "TIFF"), or None; nothing is checked beyond the magic bytes."""
    return _sniff(head)[0]


def _read_header(src, name: str) -> ImageHeader:
    head = src.read(0, 16)
    kind, parse = _sniff(head)
    if kind is None:
        raise ImageRejected(f"{name}: not a {ACCEPTED_FORMATS} image (the formats accepted); "
                            f"it starts with {head[:8]!r}")
    try:
        header = parse(src)
    except (_Truncated, struct.error) as e:
        raise ImageRejected(f"{name}: truncated or malformed {kind} header ({e})") from None
    except _TooFragmented:
        raise ImageOverBudget(f"{name}: {kind} of more than {MAX_HEADER_BLOCKS:,} data blocks "
                              f"or chunks, refused (encoders write far fewer)") from None
    if header.max_frame_pixels <= 0:
        raise ImageRejected(f"{name}: the {kind} header declares an empty image "
                            f"({header.width}x{header.height} pixels)")
    return header


def read_image_header(data: bytes, name: str = "image") -> ImageHeader:
    """Format, canvas size, frame count and largest frame of an encoded image, from its
    headers only (nothing decoded or inflated). Raises ImageRejected (naming `name`) for an
    unknown format or a truncated/malformed header."""
    return _read_header(_BytesSource(data), name)


def read_image_header_file(path: str | os.PathLike) -> ImageHeader:
    """`read_image_header` for a file on disk: reads the head and seeks from header to header
    (GIF blocks, PNG chunks, JPEG segments, ...), 64 KiB at a time, never the whole file.
    A missing path, or anything but a regular file (a folder, FIFO, device), is refused
    (ImageRejected) without reading it."""
    with _image_file(path) as src:
        return _read_header(src, os.fspath(path))


@contextlib.contextmanager
def _image_file(path: str | os.PathLike):
    """A _FileSource over `path`, refused (ImageRejected) unless it is a regular file."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageRejected(f"{os.fspath(path)}: does not exist") from None
    except OSError as e:
        raise ImageRejected(f"{os.fspath(path)}: cannot be read ({e.strerror or e})") from None
    kind = describe_mode(os.fstat(fd).st_mode)
    if kind != "file":
        os.close(fd)
        raise ImageRejected(f"{os.fspath(path)}: is a {kind}, not an image file")
    with os.fdopen(fd, "rb") as f:
        yield _FileSource(f)


def _enforce(header: ImageHeader, name: str, max_pixels: int) -> ImageHeader:
    if header.pixels <= max_pixels:
        return header
    if header.frames > 1:
        what = (f"{header.format} of {header.width}x{header.height} with {header.frames} "
                f"frames of up to {header.max_frame_pixels} pixels = {header.pixels} pixels")
    else:
        what = f"{header.format} image of {header.pixels} pixels ({header.width}x{header.height}"
        what += ")" if header.pixels == header.width * header.height else ", frame outside it)"
    raise ImageOverBudget(f"{name}: {what}, over the limit of {max_pixels} pixels "
                          f"(frames x largest frame)")


def _jpeg_scan_problem(src, header: ImageHeader, name: str) -> str | None:
    """Why a JPEG has too many scans to decode (one line naming `name`), or None."""
    if header.format != "JPEG":
        return None
    scans = src.count(b"\xff\xda")
    if scans <= MAX_JPEG_SCANS:
        return None
    return (f"{name}: JPEG of {scans} scans, over the limit of {MAX_JPEG_SCANS} (each scan of "
            f"a progressive JPEG is decoded over the whole image)")


def _within_budget(src, name: str, max_pixels: int) -> ImageHeader:
    """The header of the image in `src` if it is within the pixel budget and MAX_JPEG_SCANS;
    ImageOverBudget otherwise, ImageRejected for unknown formats and malformed headers."""
    header = _enforce(_read_header(src, name), name, max_pixels)
    problem = _jpeg_scan_problem(src, header, name)
    if problem:
        raise ImageOverBudget(problem)
    return header


def check_image_budget(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS
                       ) -> ImageHeader:
    """The header of an in-memory image if it decodes to at most `max_pixels` pixels (largest
    frame x frames) and, for a JPEG, from at most MAX_JPEG_SCANS scans; otherwise
    ImageOverBudget with one line naming `name`, what was found and the limit. Unknown formats
    and malformed headers are refused with ImageRejected."""
    return _within_budget(_BytesSource(data), name, max_pixels)


def check_image_file(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
                     ) -> ImageHeader:
    """`check_image_budget` for a file on disk, read as `read_image_header_file` does (the
    scan count of a JPEG reads the whole file, 1 MiB at a time)."""
    with _image_file(path) as src:
        return _within_budget(src, os.fspath(path), max_pixels)


# ---------------------------------------------------------------------------
# Loading: the one way an image file becomes uint8 RGB pixels
# ---------------------------------------------------------------------------

def to_rgb8(im):
    """A PIL image -> 8-bit RGB PIL image: first frame, EXIF orientation applied, 16-bit scaled
    (x / 257), transparency flattened onto white, CMYK / palette / grayscale to RGB."""
    from PIL import Image, ImageOps
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def load_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file -> uint8 RGB [H, W, 3] (`to_rgb8`'s conversion), for test data, photos
    and evaluation alike. Refused before decoding, with ImageRejected naming the file: a path
    that is missing or not a regular file, an unknown format, or headers that declare more than
    `max_pixels` (largest frame x frames); undecodable data is refused the same way."""
    from PIL import Image
    check_image_file(path, max_pixels)
    try:
        with Image.open(path) as im:
            rgb = np.asarray(to_rgb8(im))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageRejected(f"{os.fspath(path)}: cannot decode the image "
                            f"({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(rgb)
