"""common/images.py: uint8 conversion, and image headers read without decoding (crafted bytes)."""

import io
import os
import struct
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from tests.common.crafted import (anmf, bmp, chunk, gif, jpeg, many_scans, png, riff,
                                  tiff_be, vp8x)
from ugatit_tf.common import images as I

LIMIT = I.DEFAULT_MAX_PIXELS


# --- header reading ------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (gif((64, 64), [(0, 0, 64, 64)]), ("GIF", 64, 64, 1, 4096)),
    (gif((64, 64), [(0, 0, 64, 64), (0, 0, 20000, 20000)]), ("GIF", 64, 64, 2, 20000 ** 2)),
    (gif((1, 1), [(0, 0, 20000, 20000)]), ("GIF", 1, 1, 1, 20000 ** 2)),
    (gif((64, 64), [(60, 0, 10, 10)]), ("GIF", 64, 64, 1, 70 * 64)),  # frame outside screen
    (gif((8, 8), [(0, 0, 8, 8)] * 5, comment=b"c" * 1000), ("GIF", 8, 8, 5, 64)),
    (png((64, 48)), ("PNG", 64, 48, 1, 3072)),
    (png((64, 48), [(64, 48, 0, 0), (300, 10, 0, 0)]), ("PNG", 64, 48, 2, 300 * 48)),
    (png((64, 48), [(64, 48, 0, 0)] * 3, default_in_animation=False), ("PNG", 64, 48, 4, 3072)),
    (png((10, 10), [(10, 10, 0, 0), (10, 10, 5, 95)]), ("PNG", 10, 10, 2, 15 * 105)),
    (riff(vp8x(100, 50), anmf(0, 0, 100, 50), anmf(10, 0, 300, 50)),
     ("WebP", 100, 50, 2, 310 * 50)),
    (riff((b"VP8L", b"\x2f" + ((99) | (49 << 14)).to_bytes(4, "little"))),
     ("WebP", 100, 50, 1, 5000)),
    (riff((b"VP8 ", b"\0\0\0\x9d\x01\x2a" + struct.pack("<HH", 100, 50))),
     ("WebP", 100, 50, 1, 5000)),
    (riff(vp8x(10, 10), (b"VP8 ", b"\0\0\0\x9d\x01\x2a" + struct.pack("<HH", 5000, 5000))),
     ("WebP", 10, 10, 1, 5000 * 5000)),  # bitstream larger than the canvas
    (jpeg(640, 480), ("JPEG", 640, 480, 1, 640 * 480)),
    (jpeg(640, 480, sof=0xC0), ("JPEG", 640, 480, 1, 640 * 480)),
    (bmp(30, -20), ("BMP", 30, 20, 1, 600)),
    (bmp(30, 20, core=True), ("BMP", 30, 20, 1, 600)),
    (tiff_be([(30, 20), (100, 100)]), ("TIFF", 30, 20, 2, 10000)),
])
def test_read_image_header_of_crafted_images(data, expected):
    assert tuple(I.read_image_header(data)) == expected


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "TIFF"])
def test_animated_images_written_by_pillow_agree_with_pillow(fmt):
    frames = [Image.new("RGB", (37, 23), (40 * i, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    reference = Image.open(io.BytesIO(buf.getvalue()))
    header = I.read_image_header(buf.getvalue())
    assert (header.width, header.height, header.frames) == (*reference.size, reference.n_frames)
    assert header.pixels == 37 * 23 * 3


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "PNG", "GIF", "WEBP", "TIFF"])
def test_still_images_written_by_pillow(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (37, 23)).save(buf, fmt)
    assert tuple(I.read_image_header(buf.getvalue())) == (
        {"WEBP": "WebP"}.get(fmt, fmt), 37, 23, 1, 37 * 23)


@pytest.mark.parametrize("data, message", [
    (b"hello world", "upload: not a JPEG, PNG (APNG), GIF, WebP, BMP or TIFF image (the formats "
                     "accepted); it starts with b'hello wo'"),
    (b"", "upload: not a JPEG, PNG (APNG), GIF, WebP, BMP or TIFF image (the formats accepted); "
          "it starts with b''"),
    (b"\x89PNG\r\n\x1a\n\0\0", "upload: truncated or malformed PNG header (16 bytes at offset 8)"),
    (b"\xff\xd8\xff\xe0\0\x10JFIF\0" + b"\0" * 9 + b"\xff\xda",
     "upload: truncated or malformed JPEG header (no SOF segment before the scan)"),
    (gif((0, 0), []), "upload: the GIF header declares an empty image (0x0 pixels)"),
    (riff((b"ALPH", b"xx")), "upload: truncated or malformed WebP header (no VP8X, VP8 or VP8L "
                             "chunk)"),
])
def test_unknown_and_malformed_headers_are_refused_with_one_line(data, message):
    with pytest.raises(I.ImageRejected) as e:
        I.read_image_header(data, "upload")
    assert str(e.value) == message


def test_a_truncated_gif_counts_the_frames_present():
    data = gif((8, 8), [(0, 0, 8, 8), (0, 0, 9000, 9000)])
    cut = data.index(b",", data.index(b",") + 1) + 5  # inside the second descriptor
    assert I.read_image_header(data[:cut]).frames == 1
    assert I.read_image_header(data[:-1]).frames == 2  # no trailer


# --- the budget ----------------------------------------------------------------------------

def test_budget_is_largest_frame_times_frames():
    data = gif((1000, 1000), [(0, 0, 1000, 1000)] * 16)
    assert I.check_image_budget(data, "a.gif", max_pixels=16_000_000).pixels == 16_000_000
    with pytest.raises(I.ImageRejected) as e:
        I.check_image_budget(data, "a.gif", max_pixels=15_999_999)
    assert str(e.value) == ("a.gif: GIF of 1000x1000 with 16 frames of up to 1000000 pixels = "
                            "16000000 pixels, over the limit of 15999999 pixels "
                            "(frames x largest frame)")


@pytest.mark.parametrize("data, message", [
    (gif((64, 64), [(0, 0, 64, 64), (0, 0, 20000, 20000)]),
     f"x: GIF of 64x64 with 2 frames of up to 400000000 pixels = 800000000 pixels, over the "
     f"limit of {LIMIT} pixels (frames x largest frame)"),
    (gif((1, 1), [(0, 0, 20000, 20000)]),
     f"x: GIF image of 400000000 pixels (1x1, frame outside it), over the limit of {LIMIT} "
     f"pixels (frames x largest frame)"),
    (png((12000, 12000)), f"x: PNG image of 144000000 pixels (12000x12000), over the limit of "
                          f"{LIMIT} pixels (frames x largest frame)"),
    (png((100, 100), [(100, 100, 0, 0)] * 6000),
     f"x: PNG of 100x100 with 6000 frames of up to 10000 pixels = 60000000 pixels, over the "
     f"limit of {LIMIT} pixels (frames x largest frame)"),
    (riff(vp8x(64, 64), anmf(0, 0, 64, 64), anmf(0, 0, 16383, 16383)),
     f"x: WebP of 64x64 with 2 frames of up to 268402689 pixels = 536805378 pixels, over the "
     f"limit of {LIMIT} pixels (frames x largest frame)"),
    (jpeg(65535, 65535), f"x: JPEG image of 4294836225 pixels (65535x65535), over the limit of "
                         f"{LIMIT} pixels (frames x largest frame)"),
    (bmp(100000, -100000), f"x: BMP image of 10000000000 pixels (100000x100000), over the limit "
                           f"of {LIMIT} pixels (frames x largest frame)"),
])
def test_each_attack_is_refused_by_the_default_budget(data, message):
    with pytest.raises(I.ImageRejected) as e:
        I.check_image_budget(data, "x")
    assert str(e.value) == message


def test_default_budget_is_50_megapixels_all_frames_together():
    assert I.check_image_budget(png((5000, 10000)), "x").pixels == LIMIT == 50_000_000
    assert I.check_image_budget(gif((500, 500), [(0, 0, 500, 500)] * 200), "x").pixels == LIMIT
    with pytest.raises(I.ImageRejected):
        I.check_image_budget(gif((500, 500), [(0, 0, 500, 500)] * 201), "x")


# --- files ---------------------------------------------------------------------------------

def test_file_header_seeks_over_a_2_gib_chunk(tmp_path):
    """A sparse 2 GiB PNG whose second frame follows a huge IDAT: found with bounded reads."""
    path = tmp_path / "big.png"
    length = 2 ** 31 - 2
    head = png((64, 64))[:33]  # signature + IHDR
    tail = struct.pack(">I", 0) + chunk(b"fcTL", struct.pack(">5I", 1, 9000, 9000, 0, 0) +
                                        b"\0" * 6) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(head + struct.pack(">I", length) + b"IDAT")
        f.seek(length, os.SEEK_CUR)
        f.write(tail)
    tracemalloc.start()
    header = I.read_image_header_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert tuple(header) == ("PNG", 64, 64, 2, 9000 * 9000)
    assert peak < 1 << 20
    with pytest.raises(I.ImageRejected, match=f"^{path}: PNG of 64x64 with 2 frames"):
        I.check_image_file(path)


def test_file_header_walks_gif_blocks_with_bounded_memory(tmp_path):
    path = tmp_path / "long.gif"
    data = gif((16, 16), [(0, 0, 16, 16)] + [(0, 0, 5000, 5000)], comment=b"c" * (4 << 20))
    path.write_bytes(data)
    tracemalloc.start()
    header = I.read_image_header_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert header == I.read_image_header(data) == ("GIF", 16, 16, 2, 25_000_000)
    assert peak < 1 << 20


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "FIFO"), (os.mkdir, "folder")])
def test_file_header_refuses_what_is_not_a_regular_file_without_blocking(tmp_path, make, kind):
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(I.ImageRejected) as e:
        I.check_image_file(path)
    assert str(e.value) == f"{path}: is a {kind}, not an image file"


def test_file_header_of_a_missing_file(tmp_path):
    with pytest.raises(I.ImageRejected) as e:
        I.read_image_header_file(tmp_path / "missing.png")
    assert str(e.value) == f"{tmp_path / 'missing.png'}: does not exist"


# --- loading ---------------------------------------------------------------------------------

def test_load_rgb_applies_the_exif_orientation(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    img[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=95)
    loaded = I.load_rgb(p)
    assert loaded.shape == (40, 20, 3)
    # red (left half) ends up on top after a 90 degree clockwise rotation
    assert loaded[5, 10, 0] > 200 and loaded[35, 10, 0] < 60


def test_load_rgb_flattens_alpha_onto_white_and_scales_16_bit(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 255)         # opaque black stays black
    rgba[0, 1] = (0, 0, 0, 0)           # transparent becomes white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(I.load_rgb(tmp_path / "a.png")[0], [[0, 0, 0], [255] * 3])
    gray16 = np.array([[0, 257 * 100], [65535, 128]], np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g.png")
    np.testing.assert_array_equal(I.load_rgb(tmp_path / "g.png")[..., 0], [[0, 100], [255, 0]])


def test_load_rgb_refusals_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0\0\x10JFIF\0" + bytes(9) + b"\xff\xc0\0\x11\x08\0\x10\0\x10"
                    + bytes(200))
    with pytest.raises(I.ImageRejected, match=f"^{bad}: cannot decode the image"):
        I.load_rgb(bad)
    with pytest.raises(I.ImageRejected, match=f"^{tmp_path / 'missing.png'}: does not exist$"):
        I.load_rgb(tmp_path / "missing.png")
    (tmp_path / "noise.jpg").write_bytes(bytes(range(256)) * 2)
    with pytest.raises(I.ImageRejected, match="noise.jpg: not a JPEG, PNG"):
        I.load_rgb(tmp_path / "noise.jpg")


def test_load_rgb_refuses_a_frame_bomb_before_decoding(tmp_path):
    path = tmp_path / "frames.gif"
    path.write_bytes(gif((64, 64), [(0, 0, 64, 64), (0, 0, 20000, 20000)]))
    tracemalloc.start()
    with pytest.raises(I.ImageRejected, match="over the limit of 50000000 pixels"):
        I.load_rgb(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_to_uint8_roundings():
    x = np.array([-1.0, -0.5, 0.0, 0.999, 1.0, 1.5, -2.0])
    # (x + 1) * 127.5 = 0, 63.75, 127.5, 254.87, 255, 318.75, -127.5
    np.testing.assert_array_equal(I.to_uint8(x, "truncate"), [0, 63, 127, 254, 255, 255, 0])
    np.testing.assert_array_equal(I.to_uint8(x), [0, 64, 128, 255, 255, 255, 0])
    with pytest.raises(ValueError, match="rounding must be one of"):
        I.to_uint8(x, "up")
    np.testing.assert_array_equal(I.from_uint8(np.array([0, 255], np.uint8)), [-1.0, 1.0])


# --- the scan limit of progressive JPEGs ---------------------------------------------------

def test_a_jpeg_of_more_scans_than_the_limit_is_over_budget(tmp_path):
    ok, over = many_scans(I.MAX_JPEG_SCANS), many_scans(I.MAX_JPEG_SCANS + 1)
    assert I.check_image_budget(ok, "ok.jpg") == ("JPEG", 64, 48, 1, 64 * 48)
    message = (f"over.jpg: JPEG of {I.MAX_JPEG_SCANS + 1} scans, over the limit of "
               f"{I.MAX_JPEG_SCANS} (each scan of a progressive JPEG is decoded over the whole "
               f"image)")
    with pytest.raises(I.ImageOverBudget) as e:
        I.check_image_budget(over, "over.jpg")
    assert str(e.value) == message
    path = tmp_path / "over.jpg"
    path.write_bytes(over)
    with pytest.raises(I.ImageOverBudget) as e:
        I.check_image_file(path)
    assert str(e.value) == message.replace("over.jpg", str(path), 1)
    with pytest.raises(I.ImageOverBudget):
        I.load_rgb(path)
    assert I.read_image_header(over).frames == 1  # the header alone is sound


def test_scans_are_counted_across_the_file_readers_windows(tmp_path):
    """A file is counted 1 MiB at a time: an FF DA pair split by a window's edge counts too."""
    data = bytearray(many_scans(I.MAX_JPEG_SCANS))
    pad = (1 << 20) - 1 - len(data) + 2  # the EOI's FF lands on the last byte of the window
    data[-2:-2] = b"\0" * pad
    data[-2:-2] = b"\xff\xda"  # the FF at offset 2**20 - 1, the DA at 2**20
    assert data.index(b"\xff\xda", len(data) - 4) == (1 << 20) - 1
    path = tmp_path / "edge.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(I.ImageOverBudget, match=f"JPEG of {I.MAX_JPEG_SCANS + 1} scans"):
        I.check_image_file(path)


def _gif_of_tiny_blocks(n):
    frame = b"," + struct.pack("<HHHHB", 0, 0, 16, 16, 0) + b"\x02" + b"\x01\x00" * n + b"\0"
    return b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0, 0, 0) + frame + b";"


def _png_of_empty_chunks(n):
    return png((16, 16))[:33] + chunk(b"tEXt", b"") * n + chunk(b"IEND", b"")


@pytest.mark.parametrize("make, kind", [(_gif_of_tiny_blocks, "GIF"),
                                        (_png_of_empty_chunks, "PNG")])
def test_headers_of_too_many_blocks_are_over_budget(make, kind, monkeypatch):
    """Walking a GIF's sub-blocks or a PNG's chunks costs about 1 us each in Python: more than
    MAX_HEADER_BLOCKS (here lowered to 1,000) are refused instead of walked."""
    monkeypatch.setattr(I, "MAX_HEADER_BLOCKS", 1000)
    assert I.check_image_budget(make(900), "ok").frames == 1
    with pytest.raises(I.ImageOverBudget) as e:
        I.check_image_budget(make(1000), "many")
    assert str(e.value) == (f"many: {kind} of more than 1,000 data blocks or chunks, refused "
                            f"(encoders write far fewer)")
