"""common/images.py: uint8 conversion, and image headers read without decoding (crafted bytes)."""

import io
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from ugatit_tf.common import images as I

LIMIT = I.DEFAULT_MAX_PIXELS


# --- crafted images: a few lines each ------------------------------------------------------

def gif(screen, frames, comment=b""):
    """A GIF with no colour tables: each frame a (x, y, w, h) image descriptor, one LZW byte."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    if comment:  # a comment extension split into 255-byte sub-blocks
        out += b"!\xfe" + b"".join(bytes([len(comment[i:i + 255])]) + comment[i:i + 255]
                                   for i in range(0, len(comment), 255)) + b"\0"
    for x, y, w, h in frames:
        out += b"!\xf9\x04\0\0\0\0\0"  # graphic control extension
        out += b"," + struct.pack("<HHHHB", x, y, w, h, 0) + b"\x02\x01\x44\x00"
    return out + b";"


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(size, frames=(), default_in_animation=True):
    """IHDR of `size`; each frame an fcTL (w, h, x, y), the first one before IDAT or not."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", *size, 8, 2, 0, 0, 0))
    fctl = [chunk(b"fcTL", struct.pack(">5I", i, w, h, x, y) + b"\0" * 6)
            for i, (w, h, x, y) in enumerate(frames)]
    idat = chunk(b"IDAT", b"x")
    body = (fctl[:1] + [idat] + fctl[1:]) if default_in_animation else [idat] + fctl
    actl = [chunk(b"acTL", struct.pack(">II", len(frames), 0))] if frames else []
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(actl + body) + chunk(b"IEND", b"")


def riff(*chunks):
    body = b"WEBP" + b"".join(kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)
                              for kind, data in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def u24(v):
    return v.to_bytes(3, "little")


def vp8x(w, h):
    return b"VP8X", b"\x02\0\0\0" + u24(w - 1) + u24(h - 1)


def anmf(x, y, w, h):
    return b"ANMF", u24(x // 2) + u24(y // 2) + u24(w - 1) + u24(h - 1) + u24(100) + b"\0"


def jpeg(w, h, sof=0xC2):
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\0" * 9
    return b"\xff\xd8" + app0 + bytes([0xFF, sof]) + struct.pack(">HBHHB", 11, 8, h, w, 1) + \
        b"\x01\x11\x00" + b"\xff\xda"


def bmp(w, h, core=False):
    info = struct.pack("<IHH", 12, w, h) if core else struct.pack("<Iii", 40, w, h)
    return b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + info + b"\0" * 24


def tiff_be(pages):
    """Big-endian TIFF: one IFD per (w, h) page with ImageWidth (SHORT), ImageLength (LONG)."""
    out, ifd = bytearray(b"MM\0*" + struct.pack(">I", 8)), 8
    for i, (w, h) in enumerate(pages):
        nxt = ifd + 2 + 24 + 4 if i + 1 < len(pages) else 0
        out += struct.pack(">H", 2) + struct.pack(">HHIH2x", 256, 3, 1, w) + \
            struct.pack(">HHII", 257, 4, 1, h) + struct.pack(">I", nxt)
        ifd = nxt
    return bytes(out)


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
    (png((100, 100), [(100, 100, 0, 0)] * 2000),
     f"x: PNG of 100x100 with 2000 frames of up to 10000 pixels = 20000000 pixels, over the "
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


def test_default_budget_accepts_a_4096_square_still_image():
    assert I.check_image_budget(png((4096, 4096)), "x").pixels == LIMIT


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
    assert str(e.value) == f"{path}: not an image file but a {kind}"


def test_file_header_of_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        I.read_image_header_file(tmp_path / "missing.png")
