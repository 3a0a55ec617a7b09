"""Training samples: every print_freq iterations the trainer translates its current A and B
batches and writes one sheet, samples/MODEL_DIR/sample_NNNNNNN.png (and the same picture to
TensorBoard). Each row is one image pair: A | A->B | attention | A->B->A || B | B->A |
attention | B->A->B.
"""

from __future__ import annotations

import os

import numpy as np

from ugatit_tf.common.images import to_uint8
from ugatit_tf.infer.faces import heatmap_overlay
from ugatit_tf.infer.test_phase import write_png


def sample_sheet(nets, real_A: np.ndarray, real_B: np.ndarray) -> np.ndarray:
    """The sheet (uint8 RGB) for batches real_A, real_B in [-1, 1]."""
    x_ab, _, heat_ab = nets.genA2B(real_A)
    x_aba = nets.genB2A(x_ab)[0]
    x_ba, _, heat_ba = nets.genB2A(real_B)
    x_bab = nets.genA2B(x_ba)[0]
    rows = []
    for i in range(real_A.shape[0]):
        a, b = to_uint8(real_A[i]), to_uint8(real_B[i])
        rows.append(np.concatenate([
            a, to_uint8(x_ab[i]), heatmap_overlay(a, heat_ab[i].numpy()), to_uint8(x_aba[i]),
            b, to_uint8(x_ba[i]), heatmap_overlay(b, heat_ba[i].numpy()), to_uint8(x_bab[i]),
        ], axis=1))
    return np.concatenate(rows, axis=0)


def write_samples(nets, real_A, real_B, folder: str, step: int, writer=None) -> str:
    """Write the sheet of iteration `step` into `folder` (atomically) and, with a TensorBoard
    `writer`, as the image "samples". Returns the PNG's path."""
    import tensorflow as tf
    sheet = sample_sheet(nets, np.asarray(real_A), np.asarray(real_B))
    path = write_png(os.path.join(folder, f"sample_{step:07d}.png"), sheet)
    if writer is not None:
        with writer.as_default(step=step):
            tf.summary.image("samples", sheet[None], step=step)
    return path
