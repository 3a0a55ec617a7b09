"""Test setup: quiet TensorFlow, the repo root importable, Keras state freed between files, the
longest files first (for the two workers), and the two things most tests share: `tiny_config`
(the tiny model every test trains or loads) and the `tiny_dataset` fixture (a small procedural
data set on disk).

Import the helper as `from tests.conftest import tiny_config`.
"""

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

from ugatit_tf.config import Config  # noqa: E402


def tiny_config(out=None, **changes) -> Config:
    """The tiny model of the tests: the light generator at 32 px with ch 4, 2 residual blocks
    and 4 discriminator layers, seed 3, data set "tiny". With `out` (a folder), checkpoints,
    logs, samples and results go to out/ck, out/logs, out/samples, out/results. `changes`
    set any other field (`.replace(...)` changes a config afterwards)."""
    values = dict(dataset="tiny", light=True, img_size=32, ch=4, n_res=2, n_dis=4, seed=3)
    if out is not None:
        out = str(out)
        values.update(checkpoint_dir=os.path.join(out, "ck"), log_dir=os.path.join(out, "logs"),
                      sample_dir=os.path.join(out, "samples"),
                      result_dir=os.path.join(out, "results"))
    values.update(changes)
    return Config(**values)


# The files that take minutes, longest first (2026-12-03, 2 workers: from 250-400 s for
# test_distribute.py down to about 70 s for serve/test_api.py). With --dist loadfile a file
# runs whole on one worker; started first (pytest.ini turns off xdist's reordering by test
# count, which put these few-test files last), they leave the many short files to fill in,
# so both workers finish together.
LONGEST_FILES = ("train/test_distribute.py", "train/test_trainer.py", "train/test_reliability.py",
                 "convert/test_conversion.py", "test_cli.py", "evaluate/test_run.py",
                 "model/test_networks.py", "train/test_mixed_precision.py",
                 "train/test_pytorch_fidelity.py", "export/test_run.py", "serve/test_api.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::")[0].removeprefix("tests/")
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)
    items.sort(key=rank)  # stable: the other files, and the tests inside each, keep their order


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """A --dataset_dir holding the data set "tiny": 12 training and 3 test images per domain,
    48 px, drawn by tools/demo_data.py (seed 5)."""
    from tools.demo_data import generate_demo_dataset
    root = tmp_path_factory.mktemp("datasets")
    generate_demo_dataset(str(root / "tiny"), size=48, n_train=12, n_test=3, seed=5,
                          progress=False)
    return str(root)


def pytest_collection_finish(session):
    """Every test module (and with them TensorFlow, Keras, FastAPI, ...) is imported now: move
    those objects out of the garbage collector's sight (gc.freeze). Each full collection then
    walks only what the tests made: a worker's collections after each file took 2-4 s each,
    ~4 min of the suite's 2 x 15 worker-minutes, and ~1-3 s with the freeze (AMD EPYC Zen 4,
    2026-12-04: the whole suite 891 -> 799 s)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="module")
def _free_models_between_files():
    """Each test file builds its own models; drop Keras' global state and the garbage after
    each file (clear_session runs one full gc.collect) so no file's models outlive it. A
    worker's resident memory still keeps its high-water mark (oneDNN's pool and glibc keep
    freed memory for reuse): 2026-12-04, one worker grew from 10 GB after
    model/test_networks.py to 14.5 GB at the end of the suite."""
    yield
    keras.backend.clear_session(free_memory=True)
