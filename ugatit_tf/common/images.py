"""Pixels: the one conversion between the model's [-1, 1] floats and uint8 pixels.

The model works on x = pixel / 127.5 - 1. Back to pixels, (x + 1) * 127.5, there are two
roundings in use and both are deliberate:

- "truncate": the original's test phase (`inverse_transform` then `astype(uint8)` when the image
  is saved). The test phase uses it so that its PNGs equal the original's byte for byte.
- "nearest": round half to even, then clip. Everything that is not a re-run of the original
  (photos, the web page, samples, exports' in-graph twin `export.pixels.to_uint8`) uses it: it is
  the unbiased choice, 0.5 levels closer on average.
"""

from __future__ import annotations

import numpy as np

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
