"""In-graph pixel helpers shared by the SavedModel and TFLite graphs.

The serving graphs do what the original test phase does to a picture, with TensorFlow ops so
that they live inside the exported model: uint8 pixels to the model's [-1, 1] floats
(x / 127.5 - 1), a bilinear resize like cv2.resize, and back to uint8 with the "nearest"
rounding of `ugatit_tf.common.images.to_uint8` (its numpy twin). `model_variables` keeps a
Keras 3 model's weights visible to tf.Module-based exporters.
"""

from __future__ import annotations

import tensorflow as tf


def to_uint8(images):
    """[-1, 1] float -> uint8 pixels: ((x + 1) / 2 * 255), rounded and clipped."""
    x = (tf.cast(images, tf.float32) + 1.0) / 2.0 * 255.0
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def from_uint8(pixels):
    """uint8 pixels -> [-1, 1] float (x / 127.5 - 1, as the original's preprocessing)."""
    return tf.cast(pixels, tf.float32) / 127.5 - 1.0


def resize_uint8(image, size):
    """Bilinear resize of one uint8 [h, w, 3] image to [size, size, 3] uint8, like
    cv2.resize(INTER_LINEAR) in the original test phase (half-pixel centres, no
    antialiasing, result rounded to uint8)."""
    x = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear",
                        antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def model_variables(model):
    """The backing tf.Variables of a Keras 3 model. A tf.Module does not see a Keras 3
    model's variables through the model itself (keras.Variable is not a tf.Variable), so a
    module that only holds the model saves no weights and the TFLite converter turns them
    into resource ops (NaN outputs). Holding this list on the module keeps them tracked."""
    return [getattr(v, "value", v) for v in model.variables]
