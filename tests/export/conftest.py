"""Fixtures of the export tests: tiny random generators and their SavedModel, built once
per session (a few seconds) and shared by test_guards, test_saved_model and
test_serving_client."""

import pytest
import tensorflow as tf

from tests.export.helpers import MAX_BATCH, MAX_BYTES, MAX_PIXELS, tiny_config
from ugatit_tf.export.saved_model import export_saved_model
from ugatit_tf.model.networks import Networks


@pytest.fixture(scope="session")
def nets():
    tf.random.set_seed(1)
    return Networks(tiny_config(), discriminators=False)


@pytest.fixture(scope="session")
def saved_model_dir(nets, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny" / "1"
    return export_saved_model(nets, tiny_config(), str(path), max_bytes=MAX_BYTES,
                              max_pixels=MAX_PIXELS, max_batch=MAX_BATCH)


@pytest.fixture(scope="session")
def loaded(saved_model_dir):
    return tf.saved_model.load(saved_model_dir)
