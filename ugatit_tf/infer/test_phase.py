"""The original's test phase (`--phase test` without `--input`): translate every testA image to B
and every testB image to A with the latest checkpoint, write each result and its attention
overlay as PNG into result_dir/model_dir/{A2B,B2A}/, and an index.html table linking input,
output and attention. Pixels use the original's truncating conversion, so the PNGs equal the
original's byte for byte.
"""

from __future__ import annotations

import html
import os

import numpy as np
import tensorflow as tf

from ugatit_tf.common.files import atomic_write, write_text_atomic
from ugatit_tf.common.images import to_uint8
from ugatit_tf.common.progress import ProgressBar
from ugatit_tf.config import Config
from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.infer.faces import heatmap_overlay
from ugatit_tf.model.checkpoints import load_networks
from ugatit_tf.model.layers import choose_kernels
from ugatit_tf.model.networks import translator
from ugatit_tf.model.precision import resolve_precision


def write_png(path: str, rgb: np.ndarray) -> str:
    """Encode an RGB uint8 image as PNG (OpenCV's default settings) and write it atomically."""
    import cv2
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    return atomic_write(path, lambda f: f.write(data.tobytes()))


def run_test(config: Config, log=print, progress: bool = True) -> str:
    """Translate testA -> B and testB -> A with the latest checkpoint into
    result_dir/model_dir, with an index.html (name, input, output, attention). Returns the
    index path."""
    config.validate()
    files = data_lib.domain_files(config, ("testA", "testB"))
    out_dir = os.path.join(config.result_dir, config.model_dir)
    with data_lib.output_folder(out_dir, "--result_dir"):  # not left behind if loading fails
        nets, prefix = load_networks(config, mixed_precision=resolve_precision(
            config.mixed_precision, "test", log))
    log(f" [*] Loaded {prefix}")
    kernels = choose_kernels(config.kernels, batched=False)
    translate = {"A2B": translator(nets.genA2B, kernels),
                 "B2A": translator(nets.genB2A, kernels)}
    rows = []
    bar = ProgressBar(len(files["testA"]) + len(files["testB"]), label="test",
                      enabled=progress)
    for direction, domain in (("A2B", "testA"), ("B2A", "testB")):
        folder = os.path.join(out_dir, direction)
        for path in files[domain]:
            try:
                row = _translate_file(path, folder, translate[direction], config.img_size)
            except data_lib.DataError as e:
                log(f" [!] skipped: {e}")
            else:
                rows.append((direction,) + row)
            bar.update(1)
    index = os.path.join(out_dir, "index.html")
    write_index(index, rows, config.img_size)
    log(f" [*] Test finished: {len(rows)} images, {index}")
    return index


def _translate_file(path: str, folder: str, translate, size: int) -> tuple:
    """Translate one image file into folder/STEM.png and folder/STEM_attention.png. Returns
    (name, input path, output path, attention path); DataError for an unreadable input."""
    stem = os.path.splitext(os.path.basename(path))[0]
    x = data_lib.to_model_input(data_lib.load_rgb(path), size)[None]
    image, _, heatmap = translate(tf.constant(x))
    out_path = os.path.join(folder, stem + ".png")
    heat_path = os.path.join(folder, stem + "_attention.png")
    try:
        write_png(out_path, to_uint8(image[0].numpy(), "truncate"))
        write_png(heat_path, heatmap_overlay(to_uint8(x[0], "truncate"), heatmap[0].numpy()))
    except OSError as e:
        raise data_lib.OutputError(f"cannot write results to {folder} ({e}): check "
                                   f"--result_dir and the free disk space") from e
    return os.path.basename(path), path, out_path, heat_path


def write_index(index_path: str, rows, size: int) -> None:
    """index.html: one table row per (direction, name, input, output, attention) in `rows`,
    images linked by paths relative to the index."""
    base = os.path.dirname(os.path.abspath(index_path))

    def img(p):
        src = html.escape(os.path.relpath(os.path.abspath(p), base))
        return f"<td><img src='{src}' width='{size}' height='{size}'></td>"

    lines = ["<html><head><meta charset='utf-8'><title>U-GAT-IT results</title></head><body>",
             "<table border='1'><tr><th>direction</th><th>name</th><th>input</th>"
             "<th>output</th><th>attention</th></tr>"]
    for direction, name, inp, out, heat in rows:
        lines.append(f"<tr><td>{direction}</td><td>{html.escape(name)}</td>"
                     f"{img(inp)}{img(out)}{img(heat)}</tr>")
    lines.append("</table></body></html>")
    write_text_atomic(index_path, "\n".join(lines) + "\n")
