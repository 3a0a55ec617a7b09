"""ugatit_tf.export.guards through the SavedModel's bytes signatures: every refusal is
InvalidArgument naming the image's index, before anything large is decoded."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.export.helpers import MAX_BATCH, MAX_BYTES, SIZE, decode, encode, rgb, run_bytes
from ugatit_tf.export import guards

def _png():
    return encode(rgb(20, 20, seed=1), "png")


@pytest.mark.parametrize("bad, message", [
    (b"", "image_bytes[1]: empty string"),
    (b"this is not an image at all", "image_bytes[1]: not a JPEG, PNG, BMP or GIF image"),
    (b"\x00" * 100, "not a JPEG, PNG, BMP or GIF image"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "PNG"),
    ("truncated_png", "PNG"),
    (b"\xff\xd8\xff" + b"\x00" * 50, "JPEG"),
    (b"GIF89a" + b"\x01" * 3, "GIF"),
    (b"BM" + b"\x00" * 60, "the BMP header declares 0x0 pixels"),
])
def test_bad_bytes_give_invalid_argument(loaded, bad, message):
    if bad == "truncated_png":
        bad = _png()[:40]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        run_bytes(loaded, [_png(), bad])
    assert message.lower() in info.value.message.lower()


def test_byte_limit(loaded):
    noisy = encode(rgb(300, 300, smooth=False), "png")
    assert len(noisy) > MAX_BYTES
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: \d+ bytes, "
                       r"more than the limit of 200000 bytes \(max_bytes\)"):
        run_bytes(loaded, [noisy])


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "gif"])
def test_pixel_limit_from_header(loaded, fmt):
    name = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF"}[fmt]
    flat = np.full((250, 210, 3), 90, np.uint8)  # 52,500 pixels > 40,000, few bytes
    data = encode(flat, fmt)
    if fmt != "bmp":
        assert len(data) < MAX_BYTES
    else:  # an uncompressed BMP is big: check the header parse through the graph helper
        data = data[:64]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"image_bytes\[0\]: the {name} header declares 250x210 = "
                             r"52500 pixels, more than the limit of 40000 pixels"):
        run_bytes(loaded, [data])


def test_pixel_limit_on_a_lying_png_header(loaded):
    """A PNG whose IHDR claims 100000 x 100000 pixels is refused before decoding."""
    data = bytearray(_png())
    data[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")
    with pytest.raises(tf.errors.InvalidArgumentError, match="100000x100000"):
        run_bytes(loaded, [bytes(data)])


def _gif(frames, h, w):
    images = [Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=frames > 1, append_images=images[1:])
    return buf.getvalue()


def test_animated_gif_guard(loaded):
    """TF decodes every GIF frame, so frames x pixels is bounded: 100x100 frames fit
    40000 pixels 4 times."""
    out = run_bytes(loaded, [_gif(4, 100, 100)])
    assert decode(out[0]).shape == (100, 100, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: GIF frames would "
                       r"decode to 5 frame\(s\) x 100x100 = 50000 pixels"):
        run_bytes(loaded, [_gif(5, 100, 100)])


def crafted_gif(screen, frames, body=b"\x02\x02\x44\x01\x00"):
    """A GIF with a `screen` (w, h) logical screen and one image descriptor per (w, h) in
    `frames`, each followed by a tiny LZW body: what an attacker writes by hand."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for w, h in frames:
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + body
    return out + b"\x3b"


def test_gif_frames_reads_every_descriptor():
    walk = tf.function(guards.gif_frames)
    for frames in (1, 3, 7):
        assert [int(v) for v in walk(_gif(frames, 20, 30), 10_000)[:3]] == [frames, 20, 30]
    # frames larger than the screen count at the largest frame's width and height
    data = crafted_gif((1, 1), [(250, 1), (1, 260)])
    n, h, w, finished = walk(data, 10 ** 9)
    assert (int(n), int(h), int(w), bool(finished)) == (2, 260, 250, True)
    # the walk stops as soon as the budget is exceeded
    data = crafted_gif((1, 1), [(2000, 2000)] * 6)
    n, h, w, finished = walk(data, guards.DEFAULT_MAX_PIXELS)
    assert (int(n), int(h), int(w), bool(finished)) == (5, 2000, 2000, True)
    assert 5 * 2000 * 2000 > guards.DEFAULT_MAX_PIXELS >= 4 * 2000 * 2000


@pytest.mark.parametrize("name, data, message", [
    # issue 17: a 1x1 screen with one 20000x20000 frame (TF would allocate 1.2 GB)
    ("big frame", crafted_gif((1, 1), [(20000, 20000)]),
     r"image_bytes\[1\]: GIF frames would decode to 1 frame\(s\) x 20000x20000 = 400000000 "
     r"pixels .*more than the limit of 40000 pixels \(max_pixels\)"),
    # issue 17: many 46000x46000 frames under the byte limit (~19 GB if decoded)
    ("many frames", crafted_gif((1, 1), [(46000, 46000)] * 2000),
     r"image_bytes\[1\]: GIF frames would decode to 1 frame\(s\) x 46000x46000"),
    # two thin frames whose widths and heights combine: TF decodes both at 250x260
    ("thin frames", crafted_gif((1, 1), [(250, 1), (1, 260)]),
     r"image_bytes\[1\]: GIF frames would decode to 2 frame\(s\) x 260x250 = 130000 pixels"),
])
def test_gif_frames_larger_than_the_screen_are_refused(loaded, name, data, message):
    assert len(data) < 200_000
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        run_bytes(loaded, [_png(), data])


@pytest.mark.parametrize("fmt, cut", [("png", 0.5), ("png", 0.99), ("jpeg", 0.5),
                                      ("jpeg", 0.95)])
def test_truncated_png_and_jpeg_name_the_image(loaded, fmt, cut):
    data = encode(rgb(60, 60, seed=4, smooth=False), fmt)
    cut = data[:int(len(data) * cut)]
    name = {"png": "PNG", "jpeg": "JPEG"}[fmt]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"image_bytes\[2\]: truncated {name} data \({len(cut)} bytes\)"):
        run_bytes(loaded, [_png(), _png(), cut])


def test_complete_files_with_extras_are_accepted(loaded):
    """Trailing bytes after IEND / EOI and progressive JPEGs with EXIF still decode."""
    image = rgb(40, 40, seed=6)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "thumbnail follows"
    Image.fromarray(image).save(buf, format="JPEG", progressive=True, exif=exif.tobytes())
    progressive = buf.getvalue()
    assert progressive.count(b"\xff\xda") > 1  # several scans
    for data in (progressive, encode(image, "png") + b"trailing", encode(image, "jpeg") + b"xx"):
        assert decode(run_bytes(loaded, [data])[0]).shape == (40, 40, 3)


def test_batch_limits(loaded):
    png = _png()
    assert len(run_bytes(loaded, [png] * MAX_BATCH)) == MAX_BATCH
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"5 images in one request, more "
                       r"than the limit of 4 \(max_batch\)"):
        run_bytes(loaded, [png] * 5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no images given"):
        run_bytes(loaded, [])
    with pytest.raises(tf.errors.InvalidArgumentError, match="no images given"):
        loaded.signatures["a2b"](images=tf.zeros([0, SIZE, SIZE, 3]))


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(loaded):
    from tests.common.crafted import many_scans
    from ugatit_tf.common.images import MAX_JPEG_SCANS
    assert len(run_bytes(loaded, [many_scans(MAX_JPEG_SCANS)])[0]) > 0
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        run_bytes(loaded, [_png(), many_scans(MAX_JPEG_SCANS + 1)])
    assert (f"image_bytes[1]: JPEG of {MAX_JPEG_SCANS + 1} scans, more than the limit of "
            f"{MAX_JPEG_SCANS} (each scan of a progressive JPEG is decoded over the whole "
            f"image)") in info.value.message


def test_a_png_header_beyond_int32_is_refused_naming_the_image(loaded):
    """Width and height are unsigned: read as int32, 0xFFFFFFFF x 0xFFFFFFFF was -1 x -1 = 1
    pixel, passed the size checks and failed inside the decoder without the image's index."""
    data = bytearray(_png())
    data[16:24] = b"\xff" * 8
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        run_bytes(loaded, [bytes(data)])
    assert ("image_bytes[0]: the PNG header declares 4294967295x4294967295 pixels (an empty "
            "or corrupt image)") in info.value.message  # the product wraps negative in int64
