"""common/memory.py (--low_memory): the allocator settings in a fresh process, TensorFlow
working under them, and the refusal once TensorFlow is imported."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = """
import os, sys
from ugatit_tf.common.memory import use_low_memory_allocators
print("made:", use_low_memory_allocators())
print("env:", os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"])
import tensorflow as tf
x = tf.random.stateless_normal([512, 512], [1, 2])
print("sum:", float(tf.reduce_sum(tf.matmul(x, x, transpose_b=True)) > 0))
"""


def test_low_memory_settings_in_a_fresh_process():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert ("made: ['TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1', 'mallopt(M_MMAP_THRESHOLD, 1048576)', "
            "'mallopt(M_TRIM_THRESHOLD, 8388608)']") in res.stdout, res.stdout
    assert "env: 1" in res.stdout and "sum: 1.0" in res.stdout


def test_low_memory_refused_once_tensorflow_is_imported(monkeypatch):
    import tensorflow  # noqa: F401  (the test process has it already)
    from ugatit_tf.common.memory import use_low_memory_allocators
    monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)
    with pytest.raises(RuntimeError, match="must run before TensorFlow is imported"):
        use_low_memory_allocators()
    assert "TF_ONEDNN_USE_SYSTEM_ALLOCATOR" not in os.environ
