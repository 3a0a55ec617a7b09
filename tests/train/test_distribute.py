"""Scale: data-parallel training (MirroredStrategy over 2 logical CPUs,
MultiWorkerMirroredStrategy with 2 local worker processes) equals one device with the same
global batch; its chief's checkpoint resumes and loads on one device; XLA equals the plain
graph. Mixed precision: tests/train/test_mixed_precision.py.

Distributed runs happen in subprocesses (this file is also their script: `python
tests/train/test_distribute.py mirrored|worker ...`), because logical devices and collective ops
must be configured before TensorFlow initialises, and that must not leak into other tests.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THIS = os.path.abspath(__file__)
RTOL = 2e-4   # one device vs replicas: the same math, summed in another order
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}


# global batch 2 (one image per replica with 2 replicas), wgan-gp (random numbers shared out)
DIST = dict(n_res=1, batch_size=2, epoch=2, iteration=3, decay_flag=False, print_freq=100,
            save_freq=100, gan_type="wgan-gp")


def config(dataset_dir, root, **changes):
    """tests/conftest.py's tiny_config with DIST (imported late: in the subprocesses the
    devices and the cluster must be set up before TensorFlow starts)."""
    from tests.conftest import tiny_config
    return tiny_config(root, dataset_dir=dataset_dir, **{**DIST, **changes})


def losses(history, keys=("Discriminator_loss", "Generator_loss", "D_A_loss", "G_B_cycle",
                          "G_A_cam")):
    return np.array([[h[k] for k in keys] for h in history["losses"]])


# ---------------------------------------------------------------------------
# Subprocess entry points
# ---------------------------------------------------------------------------

def _subprocess_setup():
    sys.path.insert(0, ROOT)
    import tensorflow as tf
    # same as conftest: grappler only costs time for a handful of iterations
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return tf


def main_mirrored(dataset_dir, root):
    """MirroredStrategy over 2 logical CPUs with global batch 2 (wgan-gp: the gradient
    penalty's random numbers are shared out too), in float32 and in float16 (loss scaling
    across replicas): 3 iterations each. Prints RESULT <json>."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    _subprocess_setup()
    from ugatit_tf.train.trainer import Trainer
    out = {}
    for name, kw in (("mirrored", {}), ("mirrored_f16", {"mixed_precision": "mixed_float16"})):
        cfg = config(dataset_dir, os.path.join(root, name), strategy="mirrored", **kw)
        trainer = Trainer(cfg, log=lambda *a: None)
        result = trainer.train(max_iterations=3, progress=False)
        out[name] = {"history": result["history"], "replicas": trainer.sharding.replicas}
    print("RESULT " + json.dumps(out), flush=True)


def main_worker(dataset_dir, root):
    """One worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG): 3 of the 6 iterations,
    then the chief's checkpoint. Prints RESULT <json>."""
    sys.path.insert(0, ROOT)
    from ugatit_tf.train.distribute import make_strategy
    make_strategy("multiworker")  # before any other TensorFlow work
    _subprocess_setup()
    from ugatit_tf.train.trainer import Trainer
    cfg = config(dataset_dir, root, strategy="multiworker")
    trainer = Trainer(cfg, log=lambda *a: None)
    result = trainer.train(max_iterations=3, progress=False)
    print("RESULT " + json.dumps({"history": result["history"], "chief": trainer.is_chief,
                                  "replicas": trainer.sharding.replicas,
                                  "state": state_digest(trainer)}), flush=True)


def state_digest(trainer) -> str:
    """sha256 of the bytes of every network variable (weights, spectral-norm u) and of both
    Adams' variables (iterations, learning rate, slots), in a fixed order."""
    from ugatit_tf.train.optimizer import inner
    digest = hashlib.sha256()
    for model in trainer.nets.generators + trainer.nets.discriminators:
        for v in model.variables:
            digest.update(np.asarray(v).tobytes())
    for optimizer in (trainer.g_optim, trainer.d_optim):
        for v in inner(optimizer).variables:
            digest.update(np.asarray(v).tobytes())
    return digest.hexdigest()


def _run(args, env=None, timeout=300):
    res = subprocess.run([sys.executable, THIS] + args, cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, **QUIET, **(env or {})})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return _result(res.stdout)


def _result(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# ---------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_device(tiny_dataset, tmp_path_factory):
    """The reference: one device, global batch 2, 6 iterations in one go."""
    from ugatit_tf.train.trainer import Trainer
    trainer = Trainer(config(tiny_dataset, tmp_path_factory.mktemp("one")),
                      log=lambda *a: None)
    return trainer, losses(trainer.train(progress=False)["history"])


@pytest.mark.slow
def test_mirrored_two_cpus_equals_one_device(tiny_dataset, tmp_path, one_device):
    out = _run(["mirrored", tiny_dataset, str(tmp_path)])
    assert out["mirrored"]["replicas"] == 2
    one, two = one_device[1][:3], losses(out["mirrored"]["history"])
    assert two.shape == (3, 5)
    np.testing.assert_allclose(two, one, rtol=RTOL, atol=1e-4)
    # float16 with loss scaling on 2 replicas trains, close to float32
    f16 = losses(out["mirrored_f16"]["history"])
    assert np.isfinite(f16).all()
    np.testing.assert_allclose(f16[0], one[0], rtol=0.02)


@pytest.mark.slow
def test_multiworker_two_processes_equals_one_device_and_chief_checkpoint_resumes(
        tiny_dataset, tmp_path, one_device):
    from ugatit_tf.model.checkpoints import load_networks, make_checkpoint
    from ugatit_tf.train.distribute import worker_tf_config
    from ugatit_tf.train.optimizer import inner
    from ugatit_tf.train.trainer import Trainer
    ports = _free_ports(2)
    procs = []
    try:
        for index in range(2):
            env = {**os.environ, **QUIET, "TF_CONFIG": worker_tf_config(ports, index)}
            procs.append(subprocess.Popen(
                [sys.executable, THIS, "worker", tiny_dataset, str(tmp_path / "mw")], cwd=ROOT,
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = []
        deadline = time.monotonic() + 300
        for proc in procs:
            stdout, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, stdout[-4000:]
            outputs.append(_result(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [o["chief"] for o in outputs] == [True, False]
    assert all(o["replicas"] == 2 for o in outputs)
    np.testing.assert_array_equal(losses(outputs[0]["history"]), losses(outputs[1]["history"]))
    # the workers hold the same weights and optimizer state, bit for bit
    assert outputs[0]["state"] == outputs[1]["state"]
    # the same math as one device, summed in another order, from the same initial weights
    np.testing.assert_allclose(losses(outputs[0]["history"]), one_device[1][:3], rtol=RTOL,
                               atol=1e-4)

    # only the chief wrote into checkpoint_dir; one device resumes from it at iteration 3
    cfg = config(tiny_dataset, tmp_path / "mw")
    folder = os.path.join(cfg.checkpoint_dir, cfg.model_dir)
    assert sorted(f for f in os.listdir(folder) if f.startswith("ckpt-3")) == [
        "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    messages = []
    resumed = Trainer(cfg, log=messages.append)
    rest = resumed.train(progress=False)
    assert rest["start"] == 3 and any("at iteration 3" in m for m in messages), messages

    # What resuming must give, exactly: a one-device run that did its own first 3 iterations
    # (so its data iterators, random generator, step and learning rate are where the
    # workers' were) and then took the chief's weights and Adam state continues like
    # `resumed`, bit for bit. (The uninterrupted one-device run is no exact reference: from
    # iteration 1 its weights differ from the workers' by float32 summation order, Adam
    # turns rounding-level gradient differences into differences of up to 2 lr on
    # near-zero gradients, and over 6 iterations the losses drift apart by ~2e-3.)
    twin = Trainer(config(tiny_dataset, tmp_path / "twin"), log=lambda *a: None)
    twin.train(max_iterations=3, progress=False)
    state = make_checkpoint(twin.nets, inner(twin.g_optim), inner(twin.d_optim))
    state.read(os.path.join(folder, "ckpt-3")).assert_existing_objects_matched().expect_partial()
    assert state_digest(twin) == outputs[0]["state"]  # the chief saved what it held
    continued = [twin.run_iteration(it)[0] for it in range(3, 6)]
    np.testing.assert_array_equal(losses(rest["history"]), losses({"losses": continued}))
    nets, prefix = load_networks(cfg)
    assert prefix.endswith("ckpt-6")
    for a, b in zip(nets.genA2B.variables + nets.genB2A.variables,
                    twin.nets.genA2B.variables + twin.nets.genB2A.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------
# XLA
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_xla_step_equals_plain_step(tiny_dataset, tmp_path, one_device):
    """--jit_compile: the whole D and G steps (reflect pads, spectral norm, wgan-gp's
    gradient penalty with its random numbers, the fused Adam, the rho constraint) compile
    with XLA and give the plain graph's losses."""
    from ugatit_tf.train.trainer import Trainer
    cfg = config(tiny_dataset, tmp_path, jit_compile=True)
    history = Trainer(cfg, log=lambda *a: None).train(max_iterations=3, progress=False)[
        "history"]
    np.testing.assert_allclose(losses(history), one_device[1][:3], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# Fast checks
# ---------------------------------------------------------------------------

def test_global_batch_must_split_evenly_and_xla_needs_one_replica():
    import tensorflow as tf

    from ugatit_tf.config import ConfigError
    from ugatit_tf.train.distribute import Sharding, check_flags, is_chief, worker_tf_config

    class Fake:
        num_replicas_in_sync = 4
    with pytest.raises(ConfigError, match="--batch_size 6 must be a multiple of the 4"):
        Sharding(Fake(), 6)
    s = Sharding(Fake(), 8)
    assert (s.per_replica, s.scale, s.distributed) == (2, 0.25, True)
    one = Sharding(tf.distribute.get_strategy(), 3)
    assert one.share("x") == ("x",) and one.scale == 1.0
    assert is_chief(tf.distribute.get_strategy())
    cfg = json.loads(worker_tf_config([1111, 2222], 1))
    assert cfg == {"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]},
                   "task": {"type": "worker", "index": 1}}

    class Bad:
        strategy, mixed_precision = "tpu", "none"
    with pytest.raises(ConfigError, match="--strategy must be one of"):
        check_flags(Bad())


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"mirrored": main_mirrored, "worker": main_worker}[mode](*rest)
