"""Reliability of training: deterministic runs, resume after SIGKILL / SIGTERM / SIGINT (also in
the middle of a checkpoint save) with bitwise-identical final weights, and an unwritable
checkpoint folder in the middle of a run.

The training processes run main.py through a small bootstrap (BOOT) that turns off Grappler's
graph rewrites like tests/conftest.py does (seconds per start on 2 cores) and, when asked by
UGATIT_TEST_SLOW_SAVE, sleeps inside TensorFlow's checkpoint writer, at the two moments where a
crash is most harmful: after the data shards are written but before they are merged into
ckpt-N.index/.data, and after ckpt-N exists but before the `checkpoint` state file names it. It
prints a line at each, so the test can SIGKILL the process inside a save deterministically.
"""

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from ugatit_tf.config import Config
from ugatit_tf.model.checkpoints import CheckpointError, load_networks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BOOT = r"""
import os, runpy, sys, time
import tensorflow as tf
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
delay = float(os.environ.get("UGATIT_TEST_SLOW_SAVE", "0"))
if delay:
    from tensorflow.python.checkpoint import checkpoint_management, functional_saver
    merge = functional_saver.gen_io_ops.merge_v2_checkpoints
    def slow_merge(prefixes, destination, *a, **k):
        print("SAVE-HOOK merge", destination.numpy().decode(), file=sys.stderr, flush=True)
        time.sleep(delay)
        return merge(prefixes, destination, *a, **k)
    functional_saver.gen_io_ops.merge_v2_checkpoints = slow_merge
    update = checkpoint_management.update_checkpoint_state_internal
    def slow_update(save_dir, model_checkpoint_path, *a, **k):
        print("SAVE-HOOK state", model_checkpoint_path, file=sys.stderr, flush=True)
        time.sleep(delay)
        return update(save_dir, model_checkpoint_path, *a, **k)
    checkpoint_management.update_checkpoint_state_internal = slow_update
sys.argv = ["main.py"] + sys.argv[1:]
runpy.run_path("main.py", run_name="__main__")
"""

EPOCH, ITERATION = 2, 8
TOTAL = EPOCH * ITERATION


# 16 iterations, an epoch boundary, a learning-rate decay and a checkpoint every 2
RUN = dict(epoch=EPOCH, iteration=ITERATION, decay_epoch=1, print_freq=1000, save_freq=2,
           deterministic=True)


def flags(config: Config) -> list[str]:
    """The command line of `config` (the fields that differ from the defaults)."""
    default = Config()
    out = ["--phase", "train"]
    for name, value in config.to_dict().items():
        if name != "phase" and value != getattr(default, name):
            out += [f"--{name}", str(value)]
    return out


class Run:
    """A main.py training process whose output lines are collected as they come."""

    def __init__(self, config: Config, slow_save: float = 0.0):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   UGATIT_TEST_SLOW_SAVE=str(slow_save))
        self.proc = subprocess.Popen([sys.executable, "-c", BOOT] + flags(config), cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines = {"out": [], "err": []}
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=self._read, args=(k, s), daemon=True)
                        for k, s in (("out", self.proc.stdout), ("err", self.proc.stderr))]
        for t in self.threads:
            t.start()

    def _read(self, key, stream):
        for line in stream:
            with self.cond:
                self.lines[key].append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    @property
    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines["out"]) + "\n--- stderr ---\n" + "\n".join(
                line for line in self.lines["err"] if not line.startswith("train ["))[-4000:]

    def wait_for(self, pattern: str, timeout: float = 240, check=None) -> re.Match:
        """The first output line matching `pattern` (and `check(match)`), as it arrives."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines["err"] + self.lines["out"]:
                    m = regex.search(line)
                    if m and (check is None or check(m)):
                        return m
                if self.proc.poll() is not None and all(not t.is_alive() for t in self.threads):
                    raise AssertionError(f"process ended (rc {self.proc.returncode}) before "
                                         f"{pattern!r}:\n{self.text}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.text}")
                self.cond.wait(min(left, 0.5))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 240) -> int:
        rc = self.proc.wait(timeout)
        for t in self.threads:
            t.join(10)
        return rc


def iteration_at_least(n):
    return lambda m: int(m.group(1)) >= n


PROGRESS = r"it (\d+) d "


def latest(folder):
    return tf.train.latest_checkpoint(folder)


def checkpoint_values(prefix) -> dict:
    """Every variable of a checkpoint (networks, optimizers, step, RNG) as numpy; the data
    iterators' states (variant tensors) and save_counter (how many saves a run made) left out."""
    reader = tf.train.load_checkpoint(prefix)
    out = {}
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if name == "_CHECKPOINTABLE_OBJECT_GRAPH" or dtype == tf.variant or \
                name.startswith("save_counter"):
            continue
        out[name] = reader.get_tensor(name)
    return out


def assert_bitwise_equal(prefix_a, prefix_b):
    a, b = checkpoint_values(prefix_a), checkpoint_values(prefix_b)
    assert sorted(a) == sorted(b)
    tops = {name.split("/")[0] for name in a}
    assert {"G_optim", "D_optim", "discriminator_A", "discriminator_B", "step", "rng"} <= tops
    assert len(a) > 500
    differ = [n for n in a if np.asarray(a[n]).tobytes() != np.asarray(b[n]).tobytes()]
    assert not differ, f"{len(differ)} of {len(a)} variables differ: {differ[:10]}"


def run_to_end(config, already_done_ok=False) -> str:
    run = Run(config)
    rc = run.wait(600)
    assert rc == 0, run.text
    done = already_done_ok and f"Nothing to do: already trained for {TOTAL} iterations" in \
        run.text
    assert done or f"Training finished at iteration {TOTAL}" in run.text, run.text
    return latest(os.path.join(config.checkpoint_dir, config.model_dir))


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    """An uninterrupted --deterministic True run: its final checkpoint prefix."""
    cfg = tiny_config(tmp_path_factory.mktemp("reference"), dataset_dir=tiny_dataset, **RUN)
    prefix = run_to_end(cfg)
    assert prefix.endswith(f"ckpt-{TOTAL}")
    return prefix


# ---------------------------------------------------------------------------
# Determinism and crash safety
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_and_interrupted_training_resumes_bitwise_identical(tiny_dataset, tmp_path,
                                                                  reference):
    """SIGKILL inside a checkpoint save (twice, at its two critical moments), SIGTERM and
    SIGINT at random iterations, SIGKILL at a random moment, then run to the end: the final
    checkpoint equals the uninterrupted run's bit for bit (which also shows --deterministic
    runs in separate processes to be identical: the reference is one)."""
    seed = int(os.environ.get("UGATIT_CRASH_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, **RUN)
    folder = os.path.join(cfg.checkpoint_dir, cfg.model_dir)
    history = [f"seed {seed}"]

    def note(text):
        history.append(text)
        print(text)
        return " / ".join(history)

    # 1. SIGKILL while ckpt-4 is being written: shards in ckpt-4_temp, not merged yet
    run = Run(cfg, slow_save=1.0)
    run.wait_for(r"SAVE-HOOK merge .*ckpt-4$")
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    assert os.path.isdir(os.path.join(folder, "ckpt-4_temp")), note("no ckpt-4_temp")
    assert latest(folder) == os.path.join(folder, "ckpt-2"), note(f"latest {latest(folder)}")
    assert checkpoint_values(latest(folder))["step/.ATTRIBUTES/VARIABLE_VALUE"] == 2
    note("killed in the shard write of ckpt-4")

    # 2. SIGKILL after ckpt-4.index/.data exist but before the state file names them
    run = Run(cfg, slow_save=1.0)
    run.wait_for(r"SAVE-HOOK state .*ckpt-4$")
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    assert "Resumed from" in run.text and "at iteration 2" in run.text, note(run.text)
    assert os.path.exists(os.path.join(folder, "ckpt-4.index"))
    assert latest(folder) == os.path.join(folder, "ckpt-2"), note(f"latest {latest(folder)}")
    note("killed between ckpt-4's files and the state file")

    # 3-4. SIGTERM, then SIGINT, at random iterations: a checkpoint is saved, then it stops
    start = 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        at = rng.randint(start + 1, start + 3)
        run = Run(cfg)
        run.wait_for(PROGRESS, check=iteration_at_least(at))
        run.signal(sig)
        rc = run.wait()
        # 0 today; 128 + signal once main.py reports the interruption in its exit status
        assert rc in (0, 128 + sig), note(f"{sig.name} rc {rc}: {run.text}")
        m = re.search(rf"{sig.name}: checkpoint saved at iteration (\d+); rerun the same "
                      rf"command to resume", run.text)
        assert m, note(f"no {sig.name} message: {run.text}")
        step = int(m.group(1))
        assert at <= step < TOTAL, note(f"{sig.name} at {at} saved {step}")
        assert latest(folder) == os.path.join(folder, f"ckpt-{step}")
        assert checkpoint_values(latest(folder))["step/.ATTRIBUTES/VARIABLE_VALUE"] == step
        note(f"{sig.name} after iteration {at}: saved at {step}")
        start = step

    # 5. SIGKILL at a random moment once training is under way again
    run = Run(cfg)
    run.wait_for(PROGRESS, check=iteration_at_least(start + 1))
    time.sleep(rng.uniform(0.0, 1.0))
    run.signal(signal.SIGKILL)
    rc = run.wait()
    note(f"SIGKILL at random: rc {rc}, latest {os.path.basename(latest(folder))}")

    # 6. the same command again until it finishes (the kill may have come after the last save)
    prefix = run_to_end(cfg, already_done_ok=latest(folder).endswith(f"ckpt-{TOTAL}"))
    note("finished")
    assert prefix == os.path.join(folder, f"ckpt-{TOTAL}")
    assert not any(name.endswith("_temp") for name in os.listdir(folder)), note(
        str(os.listdir(folder)))
    try:
        assert_bitwise_equal(reference, prefix)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{' / '.join(history)}") from None


# ---------------------------------------------------------------------------
# Unwritable folders
# ---------------------------------------------------------------------------

def make_unwritable(folder, next_checkpoint):
    """chmod 0o555 for a normal user; root writes anyway, so put a file where TensorFlow
    creates the next checkpoint's temporary folder (same effect: the write fails)."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return lambda: os.chmod(folder, 0o755)
    blocker = os.path.join(folder, f"ckpt-{next_checkpoint}_temp")
    open(blocker, "w").close()
    return lambda: os.unlink(blocker)


@pytest.mark.slow
def test_unwritable_checkpoint_folder_mid_run(tiny_dataset, tmp_path):
    from ugatit_tf.train.trainer import Trainer
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, **RUN).replace(
        epoch=1, iteration=4, deterministic=False)
    trainer = Trainer(cfg, log=lambda *a: None)
    folder = trainer.ckpt_dir
    saved, restore = {}, []
    manager_save = trainer.manager.save

    def save_then_block(*args, **kwargs):
        path = manager_save(*args, **kwargs)
        if not restore:  # ckpt-2 was just written: the folder goes bad for the next save
            saved.update({w.path: w.numpy() for w in trainer.nets.genA2B.weights})
            restore.append(make_unwritable(folder, 4))
        return path

    trainer.manager.save = save_then_block
    with pytest.raises(CheckpointError) as e:
        trainer.train(progress=False)
    message = str(e.value)
    assert message.startswith(f"cannot write a checkpoint to {folder} (")
    assert message.endswith(f"); the previous checkpoint {os.path.join(folder, 'ckpt-2')} is "
                            f"untouched. Free disk space or fix permissions, then rerun the "
                            f"same command to resume.")
    restore[0]()
    nets, prefix = load_networks(cfg)
    assert prefix == os.path.join(folder, "ckpt-2")
    for w in nets.genA2B.weights:
        np.testing.assert_array_equal(w.numpy(), saved[w.path])
