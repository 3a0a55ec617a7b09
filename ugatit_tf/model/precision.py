"""The Keras dtype policy of --mixed_precision, under which networks are built: training
(train/trainer.py) and the forward-only phases (test, photos, serve) alike. Weights stay
float32 variables in every policy; the policy sets the compute dtype of the activations."""

from __future__ import annotations

import contextlib

import keras

from ugatit_tf.config import ConfigError

PRECISIONS = {"none": "float32", "mixed_float16": "mixed_float16",
              "mixed_bfloat16": "mixed_bfloat16"}


def policy_name(mixed_precision: str) -> str:
    if mixed_precision not in PRECISIONS:
        raise ConfigError(f"--mixed_precision must be one of {', '.join(PRECISIONS)}; "
                          f"got {mixed_precision!r}")
    return PRECISIONS[mixed_precision]


@contextlib.contextmanager
def precision_policy(mixed_precision: str):
    """Build networks under the Keras dtype policy of --mixed_precision (the previous global
    policy comes back afterwards: layers keep the policy they were built with). "none"
    leaves the current policy as it is: float32, unless a caller chose another (the float64
    reference tests)."""
    name = policy_name(mixed_precision)
    if mixed_precision == "none":
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
