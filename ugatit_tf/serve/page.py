"""What the page shows for one photo: the translated image and the attention image.

Whole photo (face crop off): the output is the SavedModel's own `{direction}_bytes` signature
on the uploaded bytes (the same PNG TF Serving would answer: the photo resized to the model's
size, translated, resized back), so the page equals the exported model; photos that need
turning upright (EXIF) or are WebP are sent as a lossless PNG of the upright pixels. The
attention map comes from the float signature `{direction}` on the same resized pixels.
Face crop on: ugatit_tf.infer.photos.PhotoTranslator finds, aligns and crops the faces (the
centre square when there is none), translates them through the float signature and, with
paste-back, blends them into the photo.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ugatit_tf.infer import faces as F
from ugatit_tf.infer.photos import PhotoTranslator
from ugatit_tf.serve.uploads import SIGNATURE_FORMATS

DIRECTIONS = ("a2b", "b2a")
ATTENTION_SIDE = 512  # the attention image of a whole photo is at most this wide or high


@dataclass
class Options:
    direction: str = "a2b"
    face_crop: bool = True
    paste_back: bool = False


@dataclass
class PageResult:
    output_png: bytes
    attention_png: bytes
    mode: str          # "photo" (whole photo), "face" or "center" (no face found)
    faces: int
    width: int
    height: int


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


class PageTranslator:
    """`run(signature, inputs) -> outputs` is the model (through the batcher)."""

    def __init__(self, run: Callable[[str, dict], dict], img_size: int):
        self.run = run
        self.img_size = int(img_size)
        self._local = threading.local()  # OpenCV's cascades are not shared between threads

    def _detector(self) -> F.FaceDetector:
        if not hasattr(self._local, "detector"):
            self._local.detector = F.FaceDetector()
        return self._local.detector

    def translate(self, data: bytes, kind: str, rgb: np.ndarray, upright: bool,
                  options: Options) -> PageResult:
        """`data`: the uploaded bytes of format `kind`; `rgb`: their decoded, upright pixels
        (`upright`: no EXIF turn was needed)."""
        if options.face_crop:
            return self._faces(rgb, options)
        return self._whole(data if kind in SIGNATURE_FORMATS and upright else encode_png(rgb),
                           rgb, options.direction)

    def _float(self, direction: str, batch: np.ndarray):
        out = self.run(direction, {"images": np.asarray(batch, np.float32)})
        return out["images"], out["heatmaps"]

    def _whole(self, data: bytes, rgb: np.ndarray, direction: str) -> PageResult:
        from ugatit_tf.export.pixels import from_uint8, resize_uint8
        png = self.run(f"{direction}_bytes", {"image_bytes": np.array([data], dtype=object)})
        output_png = bytes(png["image_bytes"][0])
        x = from_uint8(resize_uint8(rgb, self.img_size)).numpy()[None]
        _, heatmaps = self._float(direction, x)
        h, w = rgb.shape[:2]
        scale = min(1.0, ATTENTION_SIDE / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        attention = F.heatmap_overlay(small, heatmaps[0])
        return PageResult(output_png, encode_png(attention), "photo", 0, w, h)

    def _faces(self, rgb: np.ndarray, options: Options) -> PageResult:
        translator = PhotoTranslator(lambda batch: self._float(options.direction, batch),
                                     img_size=self.img_size, face_crop=True,
                                     paste_back=options.paste_back, fallback="center",
                                     detector=self._detector(), make_sheet=False)
        result = translator.translate_photo(rgb)
        attention = np.hstack([f.overlay for f in result.faces])
        faces = len(result.faces) if result.mode == "face" else 0
        out = result.output
        return PageResult(encode_png(out), encode_png(attention), result.mode, faces,
                          out.shape[1], out.shape[0])
