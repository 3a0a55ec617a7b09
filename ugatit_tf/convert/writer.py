"""Write a converted checkpoint one tensor at a time, in bounded memory.

The full model with both Adam states is 7.6 GB: building it (or even its networks) to save
it would hold every tensor at once. Instead the checkpoint is written straight from the source:

1. A twin of the networks with the same structure but `ch` 1 (a few hundred KB) is built with
   its optimizers and `step`, each variable to convert filled with its own number, and saved by
   tf.train.CheckpointManager as `ckpt-STEP` in the temporary folder. Reading it back gives,
   for every variable and Adam slot, the checkpoint key TensorFlow gave it (the number
   identifies it), the object graph, and the scalars (step, iterations, learning rate, save
   counter). Only the twin's state file is kept.
2. Every key is written with tf.raw_ops.SaveV2 in shards of about `SHARD_BYTES`, each tensor
   read from the source just before (`Tensor.read`); a tensor over `SLICE_BYTES` (the full
   model's first MLP kernel and its slots, 1 GiB each) is written in slices of rows, so that
   SaveV2's copies stay small.
   Then the shards are merged into `ckpt-STEP` with tf.raw_ops.MergeV2Checkpoints (it renames
   the data files, copies nothing); TensorFlow restores a sliced tensor as one.

The result is the checkpoint the model-building path wrote (same keys, values and object
graph), in several data files. It is built in a temporary folder next to the destination and
moved into place only when complete; an existing non-empty destination is replaced only with
`force`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ugatit_tf.convert.shared import ConversionError

__all__ = ["Tensor", "UnreadableTensor", "write_checkpoint", "zero_slots", "adam_slots",
           "check_destination", "SHARD_BYTES", "SLICE_BYTES"]

SHARD_BYTES = 128 * 2 ** 20   # tensors written by one SaveV2
SLICE_BYTES = 64 * 2 ** 20    # a bigger tensor is written in slices of rows of this size
TWIN_CH = 1


class UnreadableTensor(ConversionError):
    """`Tensor.read` could not read its value; the writer lists them all at the end."""


@dataclass(frozen=True)
class Tensor:
    """One tensor of the converted checkpoint: the value of `variable` (of a shape-only
    network, see shared.shape_only_networks) or of its Adam slot `slot` ('m' or 'v'), read
    from the source in our layout by `read()` when it is written."""

    variable: object
    read: Callable[[], np.ndarray]
    slot: str | None = None

    @property
    def key(self) -> tuple:
        return self.variable.path, self.slot

    @property
    def shape(self) -> tuple:
        return tuple(int(d) for d in self.variable.shape)


def zero_slots(variables) -> list[Tensor]:
    """Fresh Adam slots (zero moments) for these variables."""
    def zeros(v):
        return lambda: np.zeros(tuple(int(d) for d in v.shape), np.dtype(v.dtype))
    return [Tensor(v, zeros(v), slot) for v in variables for slot in ("m", "v")]


def adam_slots(optimizer, variable):
    """(momentum, velocity) of `variable` in a built Keras 3 Adam: lists aligned with the
    variables it was built with; _get_variable_index maps a variable to its position."""
    try:
        index = optimizer._get_variable_index(variable)
        return optimizer._momentums[index], optimizer._velocities[index]
    except (AttributeError, KeyError, IndexError) as e:  # pragma: no cover
        raise ConversionError(f"internal error: no Adam slots for {variable.path} "
                              f"({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------
# Destination
# ---------------------------------------------------------------------------

def check_destination(folder, force):
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConversionError(f"{folder} exists and is not a folder")
    if os.path.isdir(folder) and os.listdir(folder) and not force:
        raise ConversionError(f"{folder} already exists and is not empty; pass --force to "
                              f"replace it (its contents will be deleted)")


def _new_folder(parent, prefix):
    """An empty folder with the permissions of an ordinary mkdir (mkdtemp's are 0700)."""
    folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    return folder


def _move_into_place(tmp, folder, force, model_dir):
    check_destination(folder, force)
    parent = os.path.dirname(os.path.abspath(folder))
    old = None
    if os.path.isdir(folder):
        if os.listdir(folder):
            old = tempfile.mkdtemp(prefix=f".{model_dir}.replaced-", dir=parent)
            os.rmdir(old)
            os.rename(folder, old)
        else:
            os.rmdir(folder)
    os.rename(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(config, step: int, tensors: list[Tensor], iterations=None,
                     force: bool = False, source: str = "") -> tuple[str, str]:
    """Write config.json and checkpoint `ckpt-STEP` of `config` from `tensors` (every
    variable of the four networks, and with `iterations` = (G steps, D steps) every Adam slot
    of the trainable ones). Returns (folder, checkpoint prefix)."""
    from ugatit_tf.model.checkpoints import model_checkpoint_dir, write_config

    folder = model_checkpoint_dir(config)
    check_destination(folder, force)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = _new_folder(parent, f".{config.model_dir}.converting-")
    try:
        write_config(tmp, config)
        prefix, plan, fixed = _probe_twin(config, tmp, step, tensors, iterations)
        _write_shards(prefix, plan, fixed, source)
        _move_into_place(tmp, folder, force, config.model_dir)
        tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, os.path.join(folder, os.path.basename(prefix))


# ---------------------------------------------------------------------------
# The twin: checkpoint keys and object graph
# ---------------------------------------------------------------------------

def _probe_twin(config, folder, step, tensors, iterations):
    """Save the twin (see the module docstring) and read back: the prefix, [(key, dtype,
    Tensor)] and {key: (dtype, value)} for the keys whose value is the twin's."""
    nets, g_optim, d_optim = _build_twin(config, iterations)
    variables = _twin_variables(nets, g_optim, d_optim)
    by_key = _by_key(tensors, variables)
    codes = _number_variables(variables, by_key)
    prefix = _save_twin(config, folder, step, nets, g_optim, d_optim)
    plan, fixed = _read_twin(prefix, codes)
    _remove_twin_files(folder, prefix)
    if codes:  # pragma: no cover (each variable is saved once)
        raise ConversionError("internal error: no checkpoint key for " +
                              ", ".join(sorted(f"{t.key}" for t in codes.values())))
    return prefix, plan, fixed


def _build_twin(config, iterations):
    """The twin's networks and, with `iterations` (G steps, D steps), its built optimizers
    at those steps (else None, None)."""
    from ugatit_tf.model.checkpoints import build_optimizers
    from ugatit_tf.train.optimizer import make_optimizer
    from ugatit_tf.model.networks import Networks

    twin = config.replace(ch=TWIN_CH)
    nets = Networks(twin, discriminators=True)
    g_optim = d_optim = None
    if iterations is not None:
        g_optim, d_optim = make_optimizer(twin, "G_optim"), make_optimizer(twin, "D_optim")
        build_optimizers(nets, g_optim, d_optim)
        g_optim.iterations.assign(iterations[0])
        d_optim.iterations.assign(iterations[1])
    return nets, g_optim, d_optim


def _twin_variables(nets, g_optim, d_optim) -> dict:
    """{(variable path, slot): twin variable} for the networks and, if given, the slots."""
    out = {}
    for optim, models in ((g_optim, nets.generators), (d_optim, nets.discriminators)):
        for model in models:
            for v in model.variables:
                out[(v.path, None)] = v
                if optim is not None and v.trainable:
                    out[(v.path, "m")], out[(v.path, "v")] = adam_slots(optim, v)
    return out


def _by_key(tensors, variables) -> dict:
    """{key: Tensor} of `tensors`, which must be one for each twin variable and slot."""
    by_key = {t.key: t for t in tensors}
    if set(by_key) != set(variables):
        raise ConversionError("internal error: the tensors to write do not match the "
                              "checkpoint's variables: " +
                              ", ".join(f"{p}{'/' + s if s else ''}"
                                        for p, s in sorted(set(by_key) ^ set(variables),
                                                           key=str)))
    return by_key


def _number_variables(variables, by_key) -> dict:
    """Fill each twin variable with its own number (1, 2, ... in key order): {number:
    the Tensor to write in its place}."""
    codes = {}
    for number, (key, var) in enumerate(sorted(variables.items(), key=str), start=1):
        var.assign(np.full(tuple(var.shape), number, np.dtype(var.dtype)))
        codes[number] = by_key[key]
    return codes


def _save_twin(config, folder, step, nets, g_optim, d_optim) -> str:
    """Save the twin with its `step` as `ckpt-STEP` in `folder`, as the trainer does; the
    checkpoint prefix."""
    import tensorflow as tf

    from ugatit_tf.model.checkpoints import make_checkpoint

    step_var = tf.Variable(step, dtype=tf.int64, trainable=False, name="step")
    ckpt = make_checkpoint(nets, g_optim, d_optim, step=step_var)
    manager = tf.train.CheckpointManager(ckpt, folder, max_to_keep=config.keep_checkpoints)
    return manager.save(checkpoint_number=step)


def _read_twin(prefix, codes):
    """Read the saved twin back: [(key, dtype, Tensor)] for the keys holding a number of
    `codes` (popped from it), {key: (dtype, value)} for the others."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    plan, fixed = [], {}
    for key, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        value = reader.get_tensor(key)
        found = _code(value, dtype, codes)
        if found is not None:
            plan.append((key, dtype, codes.pop(found)))
        else:
            fixed[key] = (dtype, value)
    return plan, fixed


def _code(value, dtype, codes):
    """The number a twin variable was filled with, or None for other tensors."""
    if not dtype.is_floating or np.ndim(value) == 0 or np.size(value) == 0:
        return None
    first = float(np.ravel(value)[0])
    if first in codes and np.all(value == first):
        return int(first)
    return None


def _remove_twin_files(folder, prefix):
    """Delete the saved twin's index and data files; its state file stays."""
    for name in os.listdir(folder):
        if name.startswith(os.path.basename(prefix) + "."):
            os.remove(os.path.join(folder, name))


# ---------------------------------------------------------------------------
# Streaming the tensors
# ---------------------------------------------------------------------------

def _write_shards(prefix, plan, fixed, source):
    """SaveV2 the tensors (big ones in slices) in shards of about SHARD_BYTES, then merge
    them into `prefix`."""
    import tensorflow as tf

    shards, unreadable = _Shards(prefix), []
    for key, (dtype, value) in sorted(fixed.items()):
        if np.ndim(value):  # pragma: no cover (only scalars are not planned)
            raise ConversionError(f"internal error: no value for {key}")
        shards.add(key, "", tf.constant(value, dtype=dtype), 0)
    for key, dtype, tensor in plan:
        _add_tensor(shards, key, dtype, tensor, unreadable)
    if unreadable:
        raise ConversionError(f"cannot read {len(unreadable)} variables of {source} "
                              f"(truncated or corrupt data file?):\n  " +
                              "\n  ".join(sorted(unreadable)))
    if shards.names:
        shards.flush()
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=shards.parts, destination_prefix=prefix,
                                  delete_old_dirs=False)


class _Shards:
    """The shards `PREFIX.part-N` written so far (`parts`) and the tensors gathered for the
    next one (`names`, `specs`, `values`, `size` in bytes)."""

    def __init__(self, prefix):
        self.prefix, self.parts = prefix, []
        self.names, self.specs, self.values, self.size = [], [], [], 0

    def add(self, key, spec, value, size):
        """Gather `value` (slice `spec` of `key`), first writing the shard if it would grow
        past SHARD_BYTES."""
        if self.names and self.size + size > SHARD_BYTES:
            self.flush()
        self.names.append(key)
        self.specs.append(spec)
        self.values.append(value)
        self.size += size

    def flush(self):
        """SaveV2 the gathered tensors as the next part and start an empty one."""
        import tensorflow as tf

        tf.raw_ops.SaveV2(prefix=f"{self.prefix}.part-{len(self.parts)}",
                          tensor_names=self.names, shape_and_slices=self.specs,
                          tensors=self.values)
        self.parts.append(f"{self.prefix}.part-{len(self.parts)}")
        self.names, self.specs, self.values, self.size = [], [], [], 0


def _add_tensor(shards, key, dtype, tensor, unreadable):
    """Read `tensor` and add it to the shards as `key`, a big one in shards of its own; if
    it cannot be read, its message goes to `unreadable` instead."""
    big = dtype.size * math.prod(tensor.shape) > SLICE_BYTES
    if big and shards.names:
        shards.flush()  # no view of an earlier big tensor outlives it
    try:
        value = np.asarray(tensor.read())
    except UnreadableTensor as e:
        unreadable.append(str(e))
        return
    if value.shape != tensor.shape:  # pragma: no cover (shapes are checked before)
        raise ConversionError(f"internal error: {tensor.key} has shape {value.shape}, "
                              f"expected {tensor.shape}")
    value = value.astype(dtype.as_numpy_dtype, copy=False)
    for part, spec in _pieces(value):
        shards.add(key, spec, part, part.nbytes)
    del value, part
    if big:
        shards.flush()


def _pieces(value):
    """(part of value, slice spec) to write: the whole value (spec ''), or, above
    SLICE_BYTES, views of its rows in TensorFlow's slice syntax ('1048576 256 0,65536:-')."""
    if value.ndim == 0 or value.nbytes <= SLICE_BYTES:
        return [(value, "")]
    n = value.shape[0]
    rows = max(1, SLICE_BYTES * n // value.nbytes)
    dims = " ".join(str(d) for d in value.shape)
    rest = ":-" * (value.ndim - 1)
    return [(value[start:start + rows], f"{dims} {start},{min(rows, n - start)}{rest}")
            for start in range(0, n, rows)]
