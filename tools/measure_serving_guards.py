#!/usr/bin/env python
"""Peak memory of the SavedModel's bytes signature on crafted attacks (issue 17).

    python tools/measure_serving_guards.py [--source DIR] [--skip NAME,...]

Exports a tiny random model (light, 32 px) from the ugatit_tf found in --source (default:
this checkout; pass another checkout to measure the code before a change) with the default
limits (10 MiB, 4096 x 4096 pixels), then sends each crafted input to `serving_default` in a
fresh process and prints a Markdown table: the answer (the first line of the error or
"accepted") and the peak RSS of that process above its RSS after a warm-up request.
The crafted GIFs carry real LZW data (a constant colour), so an unguarded decoder really
decodes them. Results are in docs/reliability.md, section "Serving signature".
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def constant_lzw(n_pixels: int, min_code_size: int = 2) -> bytes:
    """GIF LZW data (in sub-blocks) for n_pixels of colour 0: runs of 1, 2, 3, ... pixels,
    a clear code whenever the 4096-entry table is full."""
    clear, eoi = 1 << min_code_size, (1 << min_code_size) + 1
    out, acc, nbits = bytearray(), 0, 0

    def emit(code, width):
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    width, next_code, longest, remaining = min_code_size + 1, eoi + 1, 1, n_pixels
    emit(clear, width)
    while remaining > 0:
        length = min(longest, remaining)
        emit(0 if length == 1 else eoi + length - 1, width)
        remaining -= length
        if remaining == 0:
            break
        next_code += 1  # the entry (emitted run + one more pixel)
        longest = max(longest, length + 1)
        if next_code >= 4096:
            emit(clear, width)
            width, next_code, longest = min_code_size + 1, eoi + 1, 1
        elif next_code == (1 << width) + 1 and width < 12:
            width += 1  # the decoder adds its entries one code later
    emit(eoi, width)
    if nbits:
        out.append(acc & 0xFF)
    blocks = bytearray([min_code_size])
    for i in range(0, len(out), 255):
        blocks += bytes([len(out[i:i + 255])]) + out[i:i + 255]
    return bytes(blocks + b"\0")


def gif(screen, frames) -> bytes:
    """A GIF with a (w, h) logical screen and one constant-colour image per (w, h) frame."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for w, h in frames:
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + constant_lzw(w * h)
    return out + b"\x3b"


def cases() -> dict:
    import tensorflow as tf
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    png = tf.io.encode_png(noise).numpy()
    jpeg = tf.io.encode_jpeg(noise, quality=90).numpy()
    return {
        "jpeg_ok_1000px": jpeg,
        "gif_1x1_screen_20000px_frame": gif((1, 1), [(20000, 20000)]),
        "gif_1x1_screen_6_frames_46000px": gif((1, 1), [(46000, 46000)] * 6),
        "gif_thin_frames_20000x1_1x20000": gif((1, 1), [(20000, 1), (1, 20000)]),
        "png_truncated_half": png[:len(png) // 2],
        "jpeg_truncated_60pct": jpeg[:len(jpeg) * 6 // 10],
    }


EXPORT = """
import sys, tensorflow as tf
from ugatit_tf.config import Config
from ugatit_tf.model.networks import Networks
from ugatit_tf.export.saved_model import export_saved_model
config = Config(light=True, img_size=32, ch=8, n_res=2, n_dis=4, dataset="tiny").validate()
export_saved_model(Networks(config, discriminators=False), config, sys.argv[1])
"""

REQUEST = r"""
import json, re, resource, sys, tensorflow as tf
def first_reason(message):
    named = re.search(r"image_bytes\[\d+\][^\]\n]*", message)
    if named:
        return named.group(0)
    lines = [x.strip() for x in message.splitlines() if x.strip()]
    useful = [x for x in lines if "Graph execution error" not in x and not x.startswith(
        ("Detected at node", "File ", "[[", "Traceback", "<stack traces"))]
    return (useful or lines)[0]
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model = tf.saved_model.load(sys.argv[1])
fn = model.signatures["serving_default"]
small = tf.io.encode_png(tf.zeros([40, 40, 3], tf.uint8))
fn(image_bytes=tf.constant([small.numpy()]))
base = peak()
data = open(sys.argv[2], "rb").read()
try:
    fn(image_bytes=tf.constant([data]))
    answer = "accepted"
except tf.errors.OpError as e:
    answer = type(e).__name__ + ": " + first_reason(e.message)[:200]
print("RESULT " + json.dumps({"answer": answer, "base_mb": base, "peak_mb": peak()}))
"""


def run(code, args, source, timeout=900):
    env = dict(os.environ, PYTHONPATH=source, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tempfile.gettempdir())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=ROOT, help="checkout whose ugatit_tf is measured")
    parser.add_argument("--skip", default="", help="comma-separated case names not to run")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny", "1")
        done = run(EXPORT, [model], args.source)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        print("| case | bytes | answer | peak RSS above baseline (MB) |\n|---|---|---|---|")
        for name, data in cases().items():
            if name in skip:
                print(f"| {name} | {len(data)} | not run | |")
                continue
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            done = run(REQUEST, [model, path], args.source)
            lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if not lines:
                print(f"| {name} | {len(data)} | process died (exit {done.returncode}) | |")
                continue
            r = json.loads(lines[-1][len("RESULT "):])
            print(f"| {name} | {len(data)} | {r['answer'].replace('|', '/')} | "
                  f"{r['peak_mb'] - r['base_mb']:.0f} (baseline {r['base_mb']:.0f}) |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
