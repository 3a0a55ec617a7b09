"""Crafted image bytes for header and budget tests: each format's headers in a few lines,
with no pixel data worth decoding (a 20000 x 20000 frame costs a dozen bytes)."""

import struct
import zlib


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


def many_scans(n: int, size=(64, 48)) -> bytes:
    """A progressive JPEG of `n` scans (n >= 10): Pillow's 10-scan file with its last scan
    repeated, which decoders accept and decode again each time (the cost a hostile upload
    multiplies)."""
    import io

    import numpy as np
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    assert data.count(b"\xff\xda") == 10 and data.endswith(b"\xff\xd9")
    last = data[data.rindex(b"\xff\xda"):-2]
    return data[:-2] + last * (n - 10) + b"\xff\xd9"
