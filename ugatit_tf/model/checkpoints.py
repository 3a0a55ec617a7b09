"""Checkpoint layout shared by training, test, export and the converters.

    checkpoint_dir/model_dir/
        config.json          the Config the checkpoints were written with
        checkpoint           tf.train.CheckpointManager's state file (latest + kept ones)
        ckpt-STEP.index/.data-*

The checkpoint object has the original's names: generator_B (A->B), generator_A (B->A),
discriminator_A, discriminator_B, plus G_optim, D_optim and `step` when training.
"""

from __future__ import annotations

import json
import os
import tempfile

import keras
import tensorflow as tf

from ugatit_tf.config import Config
from ugatit_tf.model.networks import Networks
from ugatit_tf.model.restore import restore_variables

CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or belongs to another configuration."""


def model_checkpoint_dir(config: Config) -> str:
    return os.path.join(config.checkpoint_dir, config.model_dir)


def make_optimizer(config: Config, name: str) -> keras.optimizers.Adam:
    """Adam as in the original: lr, beta1 0.5, beta2 0.999, epsilon 1e-8 (TF1's default).
    The learning rate is a variable so that decay and resume restore it exactly."""
    return keras.optimizers.Adam(learning_rate=config.lr, beta_1=0.5, beta_2=0.999,
                                 epsilon=1e-8, name=name)


def make_checkpoint(nets: Networks, g_optim=None, d_optim=None, **extra) -> tf.train.Checkpoint:
    objects = {"generator_B": nets.genA2B, "generator_A": nets.genB2A}
    if nets.disA is not None:
        objects["discriminator_A"] = nets.disA
        objects["discriminator_B"] = nets.disB
    if g_optim is not None:
        objects["G_optim"] = g_optim
    if d_optim is not None:
        objects["D_optim"] = d_optim
    objects.update(extra)
    return tf.train.Checkpoint(**objects)


def write_json_atomic(path: str, obj) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_config(folder: str, config: Config) -> None:
    write_json_atomic(os.path.join(folder, CONFIG_FILE), config.to_dict())


def read_config(folder: str) -> dict | None:
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def check_config_matches(config: Config, folder: str) -> None:
    """Fail with a message naming the flag when the saved config's architecture differs."""
    saved = read_config(folder)
    if saved is None:
        return
    mismatched = config.architecture_mismatch(saved)
    if mismatched:
        details = ", ".join(f"--{n} {saved[n]} (you gave {getattr(config, n)})"
                            for n in mismatched)
        raise CheckpointError(
            f"the checkpoint in {folder} was trained with {details}; "
            f"pass the same flag values to use it")


def latest_checkpoint(folder: str) -> str | None:
    return tf.train.latest_checkpoint(folder) if os.path.isdir(folder) else None


def build_optimizers(nets: Networks, g_optim, d_optim) -> None:
    """Create the Adam slots now, so a checkpoint can restore them before the first step."""
    g_vars = [v for m in nets.generators for v in m.trainable_variables]
    d_vars = [v for m in nets.discriminators for v in m.trainable_variables]
    g_optim.build(g_vars)
    d_optim.build(d_vars)


def load_networks(config: Config, discriminators: bool = False,
                  checkpoint: str | None = None) -> tuple[Networks, str]:
    """Build the networks and restore the latest checkpoint of `config` (or the given
    checkpoint prefix). Raises CheckpointError with what to do when there is none."""
    folder = model_checkpoint_dir(config)
    prefix = checkpoint or latest_checkpoint(folder)
    if prefix is None:
        raise CheckpointError(
            f"no checkpoint found in {folder}: train first (python main.py --phase train "
            f"--dataset {config.dataset} ...) or convert released weights with "
            f"tools/convert_checkpoint.py, and pass the same flags (--light, --ch, ...)")
    check_config_matches(config, os.path.dirname(prefix) or folder)
    # zeros, not random numbers, then one variable at a time: the full model fits in 4 GB
    nets = Networks(config, discriminators=discriminators, generator_init="zeros")
    try:
        restore_variables(make_checkpoint(nets), prefix)  # optimizer slots are not read
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"cannot restore {prefix}: {e}") from e
    return nets, prefix
