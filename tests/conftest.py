"""Test setup: quiet TensorFlow, the repo root importable, Keras state freed between files."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `ugatit_tf`, `tools` and `tests.reference` importable from any folder
    sys.path.insert(0, ROOT)

import tensorflow as tf  # noqa: E402

# Grappler's graph rewrites cost seconds per traced training step on 2 cores and buy nothing
# for the handful of iterations a test runs; the graphs' results are the same.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


import gc  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_models_between_files():
    """Each test file builds its own models; drop Keras' global state and the garbage after
    each file so the whole suite's memory stays that of its largest file."""
    yield
    keras.backend.clear_session()
    gc.collect()
