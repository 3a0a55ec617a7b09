"""ugatit_tf.model.restore: the variable-by-variable restore gives exactly what
tf.train.Checkpoint.read gives, reads only the variables of the built networks, and names the
variable on a mismatch before changing anything."""

import numpy as np
import pytest
import tensorflow as tf

from ugatit_tf.config import Config
from ugatit_tf.model.checkpoints import (load_networks, make_checkpoint, model_checkpoint_dir,
                                         write_config)
from ugatit_tf.model.networks import Networks
from ugatit_tf.model.restore import checkpoint_variables, restore_variables
from ugatit_tf.train.optimizer import make_optimizer


def _config(tmp_path, **changes):
    values = dict(light=True, img_size=32, ch=8, n_res=2, n_dis=4, dataset="tiny",
                  checkpoint_dir=str(tmp_path / "checkpoints"))
    values.update(changes)
    return Config(**values).validate()


def _saved(tmp_path, **changes):
    """A training-like checkpoint: all four networks, an optimizer, a step."""
    config = _config(tmp_path, **changes)
    nets = Networks(config)
    g_optim = make_optimizer(config, "G_optim")
    g_optim.build([v for g in nets.generators for v in g.trainable_variables])
    folder = model_checkpoint_dir(config)
    ckpt = make_checkpoint(nets, g_optim, step=tf.Variable(7, dtype=tf.int64))
    prefix = tf.train.CheckpointManager(ckpt, folder, max_to_keep=1).save()
    write_config(folder, config)
    return config, nets, prefix


def _values(models):
    return {v.path: v.numpy() for m in models for v in m.variables}


@pytest.mark.parametrize("variant", ["tf1", pytest.param("pytorch", marks=pytest.mark.slow)])
def test_same_as_checkpoint_read(tmp_path, variant):
    config, nets, prefix = _saved(tmp_path, variant=variant)
    ours = Networks(config, generator_init="zeros")
    theirs = Networks(config)
    status = make_checkpoint(theirs).read(prefix)
    status.assert_existing_objects_matched().expect_partial()
    count = len(checkpoint_variables(make_checkpoint(ours), tf.train.load_checkpoint(prefix)))
    assert restore_variables(make_checkpoint(ours), prefix) == count == 2 * len(
        nets.genA2B.variables) + 2 * len(nets.disA.variables)
    models = lambda n: n.generators + n.discriminators  # noqa: E731
    expected, got, original = _values(models(theirs)), _values(models(ours)), _values(
        models(nets))
    assert set(got) == set(expected) == set(original)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
        assert np.array_equal(got[name], original[name]), name
    x = tf.random.stateless_uniform([1, 32, 32, 3], [1, 2], -1, 1)
    assert np.array_equal(ours.genA2B(x)[0].numpy(), nets.genA2B(x)[0].numpy())


def test_keys_come_from_the_stored_object_graph(tmp_path):
    """In a training checkpoint the generators' tensors are stored under the optimizer's
    path (G_optim/_trainable_variables/N): the walk finds them there."""
    config, nets, prefix = _saved(tmp_path)
    stored = dict(tf.train.list_variables(prefix))
    found = checkpoint_variables(make_checkpoint(nets), tf.train.load_checkpoint(prefix))
    for path, key, variable in found:
        assert stored[key] == variable.shape.as_list(), key
    keys = {path: key for path, key, _ in found}
    assert keys["generator_A/conv/kernel"].startswith("G_optim/_trainable_variables/")
    assert keys["discriminator_A/local/conv_0/kernel"] == (
        "discriminator_A/local/conv_0/kernel/.ATTRIBUTES/VARIABLE_VALUE")


def test_load_networks_builds_generators_only(tmp_path):
    config, nets, _ = _saved(tmp_path)
    loaded, prefix = load_networks(config)
    assert loaded.disA is None and prefix.endswith("ckpt-1")
    expected = _values(nets.generators)
    for name, value in _values(loaded.generators).items():
        assert np.array_equal(value, expected[name]), name


def test_mismatch_names_the_variable_and_changes_nothing(tmp_path):
    config, _, prefix = _saved(tmp_path)
    other = Networks(config.replace(ch=4), discriminators=False)
    before = _values(other.generators)
    with pytest.raises(ValueError, match=r"ckpt-1: generator_[AB]/conv/kernel is float32 "
                                         r"\[7, 7, 3, 8\], the model expects float32 "
                                         r"\[7, 7, 3, 4\]"):
        restore_variables(make_checkpoint(other), prefix)
    for name, value in _values(other.generators).items():
        assert np.array_equal(value, before[name])
    extra = tf.train.Checkpoint(generator_B=other.genA2B, extra=tf.Variable(1.0))
    with pytest.raises(ValueError, match=r"ckpt-1: the checkpoint has no extra$"):
        restore_variables(extra, prefix)


@pytest.mark.parametrize("size", [0, 1000])
def test_a_truncated_data_file_is_a_checkpoint_error(tmp_path, size):
    """A damaged download or a full disk: the data file cut short ended in an IndexError
    traceback ('Read less bytes than requested'); now one CheckpointError naming the prefix."""
    from ugatit_tf.model.checkpoints import CheckpointError
    config, _, prefix = _saved(tmp_path)
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.truncate(size)
    with pytest.raises(CheckpointError) as e:
        load_networks(config)
    assert str(e.value).startswith(f"cannot restore {prefix}: ")
    assert str(e.value).endswith("(a damaged or truncated checkpoint?)")
