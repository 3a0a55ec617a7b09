"""Data-parallel training, mixed precision and XLA for the trainer (`--strategy`,
`--mixed_precision`, `--jit_compile`): the tf.distribute strategy, how the global batch is shared
out over the replicas and their losses summed back, the Keras dtype policy the networks are
built under, and the non-chief workers' share of a checkpoint save. docs/training.md explains
why a distributed run equals one device with the same global batch, up to float rounding.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

from ugatit_tf.config import ConfigError
from ugatit_tf.model.precision import check_precision

STRATEGIES = ("default", "mirrored", "multiworker")

_STRATEGY_CACHE: dict = {}


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

def check_flags(config) -> None:
    """ConfigError naming the flag for an unknown --strategy / --mixed_precision value."""
    strategy = getattr(config, "strategy", "default")
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    check_precision(getattr(config, "mixed_precision", "none"))  # ConfigError naming the flag


def local_devices() -> list[str]:
    """The devices MirroredStrategy uses here: every GPU, else every logical CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for --strategy NAME. One per process (cached):
    MultiWorkerMirroredStrategy may only be created once, before other TensorFlow work."""
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name in _STRATEGY_CACHE:
        return _STRATEGY_CACHE[name]
    if name == "mirrored":
        devices = local_devices()
        # one CPU: plain copies (NCCL is for GPUs only)
        ops = None if tf.config.list_logical_devices("GPU") else \
            tf.distribute.ReductionToOneDevice()
        strategy = tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=ops)
    else:
        tf_config = os.environ.get("TF_CONFIG")
        if tf_config:
            try:
                json.loads(tf_config)
            except ValueError as e:
                raise ConfigError(f"--strategy multiworker: TF_CONFIG is not valid JSON ({e})")
        # physical, not logical devices: listing logical ones would initialise the runtime,
        # and collective ops must be configured before that
        implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL
                          if tf.config.list_physical_devices("GPU") else
                          tf.distribute.experimental.CommunicationImplementation.RING)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation))
    _STRATEGY_CACHE[name] = strategy
    return strategy


def is_chief(strategy) -> bool:
    """Worker 0 (TF_CONFIG's chief, or worker 0 without a chief) writes the files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_tf_config(ports: list[int], index: int, host: str = "127.0.0.1") -> str:
    """TF_CONFIG for worker `index` of a cluster of len(ports) workers on one host."""
    return json.dumps({"cluster": {"worker": [f"{host}:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


class Sharding:
    """How the global batch is split over the replicas of a strategy."""

    def __init__(self, strategy, global_batch: int):
        self.strategy = strategy
        self.replicas = int(strategy.num_replicas_in_sync)
        if global_batch % self.replicas:
            raise ConfigError(
                f"--batch_size {global_batch} must be a multiple of the {self.replicas} "
                f"replicas in sync (--batch_size is the global batch)")
        self.global_batch = global_batch
        self.per_replica = global_batch // self.replicas
        self.scale = 1.0 / self.replicas

    @property
    def distributed(self) -> bool:
        return self.replicas > 1

    def share(self, *tensors):
        """Inside strategy.run: this replica's slice of each global-batch tensor (nested
        lists and tuples are followed; leading axis = batch)."""
        if not self.distributed:
            return tensors
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        start = tf.cast(replica, tf.int32) * self.per_replica

        def cut(t):
            return t[start:start + self.per_replica]
        return tf.nest.map_structure(cut, tensors)

    def reduce(self, per_replica):
        """Sum per-replica (already 1/R-scaled) values into the global ones."""
        if not self.distributed:
            return per_replica
        return tf.nest.map_structure(
            lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None),
            per_replica)

    def sync_finiteness(self, grads):
        """With loss scaling on several replicas: if any replica has a non-finite gradient,
        make every replica's gradients non-finite, so that all of them skip the step (Keras'
        LossScaleOptimizer decides per replica, on the not yet all-reduced gradients)."""
        if not self.distributed:
            return grads
        bad = tf.add_n([tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(g)), tf.float32))
                        for g in grads if g is not None])
        bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, bad)
        return [None if g is None else tf.where(bad > 0, tf.constant(float("nan"), g.dtype), g)
                for g in grads]


# ---------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------

def uses_loss_scale(mixed_precision: str) -> bool:
    return mixed_precision == "mixed_float16"


# ---------------------------------------------------------------------------
# Non-chief checkpoint writes
# ---------------------------------------------------------------------------

def write_to_temporary(checkpoint: tf.train.Checkpoint) -> None:
    """A non-chief worker's share of a save: write into a temporary folder, then delete it."""
    folder = tempfile.mkdtemp(prefix="ugatit-worker-ckpt-")
    try:
        checkpoint.write(os.path.join(folder, "ckpt"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
