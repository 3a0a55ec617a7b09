"""Helpers shared by the tests of ugatit_tf.export: a tiny config, test pictures, codecs."""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from tests.conftest import tiny_config as conftest_tiny_config
from ugatit_tf.export.pixels import from_uint8, to_uint8

SIZE = 32
MAX_BYTES = 200_000
MAX_PIXELS = 200 * 200
MAX_BATCH = 4


def tiny_config(**changes):
    """The suite's tiny model (tests/conftest.py) with ch 8, validated."""
    return conftest_tiny_config(**{"ch": 8, **changes}).validate()


def rgb(h, w, seed=0, smooth=True):
    """A test picture: smooth colour blobs (compress like photos) or noise."""
    rng = np.random.default_rng(seed)
    if not smooth:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    small = rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    return np.clip(tf.image.resize(small, [h, w]).numpy()[0], 0, 255).astype(np.uint8)


def encode(image, fmt):
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    if fmt == "jpeg":
        return tf.io.encode_jpeg(image, quality=95).numpy()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format={"bmp": "BMP", "gif": "GIF"}[fmt])
    return buf.getvalue()


def decode(png):
    return tf.io.decode_png(png, channels=3).numpy()


def keras_uint8(generator, pixels):
    """What the export should compute for uint8 [N, S, S, 3] pixels, via the Keras model."""
    y, _, _ = generator(from_uint8(pixels), training=False)
    return to_uint8(y).numpy()


def run_bytes(loaded, images, signature="serving_default"):
    out = loaded.signatures[signature](image_bytes=tf.constant(images, dtype=tf.string))
    return [bytes(v) for v in out["image_bytes"].numpy()]
