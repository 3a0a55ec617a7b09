"""Checkpoint layout shared by training, test, export and the converters.

    checkpoint_dir/model_dir/
        config.json          the Config the checkpoints were written with
        checkpoint           tf.train.CheckpointManager's state file (latest + kept ones)
        ckpt-STEP.index/.data-*

The checkpoint object has the original's names: generator_B (A->B), generator_A (B->A),
discriminator_A, discriminator_B, plus G_optim, D_optim and `step` when training.
Finding a checkpoint and the flags it was trained with (`resolve_checkpoint`) reads only
config.json and the state file, without TensorFlow, so a wrong path fails in a blink.
"""

from __future__ import annotations

import json
import os
import re
import shlex

from ugatit_tf.common.files import write_json_atomic
from ugatit_tf.config import Config

CONFIG_FILE = "config.json"
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's list of checkpoints
# The flags a checkpoint brings along when they are not given: the architecture, the image
# size and the ones that name its folder (model_dir).
CHECKPOINT_FLAGS = Config.ARCHITECTURE_FLAGS + (
    "img_size", "dataset", "gan_type", "n_critic", "adv_weight", "cycle_weight",
    "identity_weight", "cam_weight")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or belongs to another configuration."""


def model_checkpoint_dir(config: Config) -> str:
    return os.path.join(config.checkpoint_dir, config.model_dir)


def make_checkpoint(nets, g_optim=None, d_optim=None, **extra):
    """The tf.train.Checkpoint of `nets` (a Networks) with the original's names."""
    import tensorflow as tf
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


def write_config(folder: str, config: Config) -> None:
    write_json_atomic(os.path.join(folder, CONFIG_FILE), config.to_dict())


def read_config(folder: str) -> dict | None:
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(saved, dict):
        raise CheckpointError(f"cannot read {path}: not a JSON object of flags")
    return saved


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
    """The newest checkpoint prefix listed in `folder`'s state file whose index exists (like
    tf.train.latest_checkpoint, without TensorFlow), or None."""
    try:
        with open(os.path.join(folder, STATE_FILE)) as f:
            state = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state, re.MULTILINE)
    if not match:
        return None
    listed = match.group(1)
    for prefix in (os.path.join(folder, listed), os.path.join(folder, os.path.basename(listed))):
        if os.path.isfile(prefix + ".index"):
            return prefix
    return None


def locate_checkpoint(path: str) -> str:
    """The checkpoint prefix of a --checkpoint PATH: a checkpoint folder (the newest of its
    checkpoints), a `ckpt-N` prefix or a converted release folder. Raises CheckpointError
    naming the path when it is none of these."""
    if not os.path.exists(path) and not os.path.isfile(path + ".index"):
        raise CheckpointError(f"--checkpoint {path} does not exist")
    prefix = latest_checkpoint(path) if os.path.isdir(path) else (
        path if os.path.isfile(path + ".index") else None)
    if prefix is None:
        raise CheckpointError(
            f"--checkpoint {path} is not a checkpoint: give a checkpoint folder (it holds a "
            f"'checkpoint' file), a ckpt-N prefix (ckpt-N.index beside it) or a folder written "
            f"by tools/convert_checkpoint.py")
    if read_config(os.path.dirname(prefix)) is None:
        raise CheckpointError(
            f"--checkpoint {path} has no {CONFIG_FILE} beside it, so it was not written by this "
            f"port (the original's release?): convert it first with python "
            f"tools/convert_checkpoint.py --source tf1 --checkpoint {prefix} --dataset NAME")
    return prefix


def resolve_checkpoint(config: Config, given=frozenset(), log=print) -> Config:
    """The config to run a checkpoint with, its prefix in `checkpoint`.

    The checkpoint is --checkpoint, else the newest one of checkpoint_dir/model_dir. The flags
    of CHECKPOINT_FLAGS not in `given` (the names given on the command line) come from its
    config.json; a given architecture flag that contradicts it raises CheckpointError naming
    the flag. A light model may run at another --img_size: said in one line, and its results
    go to result_dir/SIZEpx so that they never overwrite those of the trained size."""
    prefix = (locate_checkpoint(config.checkpoint) if config.checkpoint
              else latest_checkpoint(model_checkpoint_dir(config)))
    if prefix is None:
        raise CheckpointError(no_checkpoint_message(config, given))
    folder = os.path.dirname(prefix)
    saved = read_config(folder) or {}
    config = config.replace(checkpoint=prefix, **{
        n: saved[n] for n in CHECKPOINT_FLAGS if n in saved and n not in given})
    check_config_matches(config, folder)
    trained = saved.get("img_size", config.img_size)
    if trained != config.img_size:  # only a light model gets here
        config = config.replace(result_dir=os.path.join(config.result_dir,
                                                        f"{config.img_size}px"))
        log(f" [*] The light model {folder} was trained at --img_size {trained}; running it at "
            f"{config.img_size} px, results in {config.result_dir}")
    return config


def no_checkpoint_message(config: Config, given=frozenset()) -> str:
    """What to do when checkpoint_dir/model_dir holds no checkpoint: the exact command for each
    checkpoint of the same data set, else how to make one."""
    folder = model_checkpoint_dir(config)
    found = dataset_checkpoints(config.checkpoint_dir, config.dataset)
    if not found:
        return (f"no checkpoint found in {folder}: train first (python main.py --phase train "
                f"--dataset {config.dataset} ...) or convert released weights with "
                f"tools/convert_checkpoint.py")
    keep = ["phase"] + [n for n in sorted(given) if n not in CHECKPOINT_FLAGS + (
        "phase", "checkpoint", "checkpoint_dir")]
    words = ["python", "main.py"] + [w for n in keep for w in (f"--{n}", str(getattr(config, n)))]
    commands = [shlex.join(words + ["--checkpoint", path]) for path in found]
    return (f"no checkpoint found in {folder} (the flags name that folder); to use a checkpoint "
            f"of --dataset {config.dataset}: " + " ; ".join(commands))


def dataset_checkpoints(checkpoint_dir: str, dataset: str) -> list[str]:
    """Checkpoint folders under `checkpoint_dir` whose config.json names `dataset`."""
    try:
        names = sorted(os.listdir(checkpoint_dir))
    except OSError:
        return []
    found = []
    for name in names:
        folder = os.path.join(checkpoint_dir, name)
        try:
            saved = read_config(folder)
        except CheckpointError:
            continue
        if saved and saved.get("dataset") == dataset and latest_checkpoint(folder):
            found.append(folder)
    return found


def build_optimizers(nets, g_optim, d_optim) -> None:
    """Create the Adam slots now, so a checkpoint can restore them before the first step."""
    g_vars = [v for m in nets.generators for v in m.trainable_variables]
    d_vars = [v for m in nets.discriminators for v in m.trainable_variables]
    g_optim.build(g_vars)
    d_optim.build(d_vars)


def load_networks(config: Config, discriminators: bool = False, checkpoint: str | None = None,
                  mixed_precision: str = "none"):
    """Build the networks (a Networks) and restore the given checkpoint prefix, else
    config.checkpoint, else the latest checkpoint of `config`; returns (networks, prefix).
    `mixed_precision` (a --mixed_precision value) is the compute precision they are built
    with (weights stay float32). Raises CheckpointError with what to do when there is none."""
    import tensorflow as tf

    from ugatit_tf.model.networks import Networks
    from ugatit_tf.model.restore import restore_variables
    from ugatit_tf.model.precision import precision_policy
    folder = model_checkpoint_dir(config)
    prefix = checkpoint or (locate_checkpoint(config.checkpoint) if config.checkpoint
                            else latest_checkpoint(folder))
    if prefix is None:
        raise CheckpointError(no_checkpoint_message(config))
    check_config_matches(config, os.path.dirname(prefix) or folder)
    # zeros, not random numbers, then one variable at a time: the full model fits in 4 GB
    with precision_policy(mixed_precision):
        nets = Networks(config, discriminators=discriminators, generator_init="zeros")
    try:
        restore_variables(make_checkpoint(nets), prefix)  # optimizer slots are not read
    except (tf.errors.OpError, ValueError, IndexError) as e:  # IndexError: a truncated file
        raise CheckpointError(f"cannot restore {prefix}: {type(e).__name__}: {e} (a damaged "
                              f"or truncated checkpoint?)") from e
    return nets, prefix
