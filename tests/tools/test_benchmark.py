"""tools/benchmark.py: the infer mode end to end on a tiny config (subprocess, JSON line),
and the FLOP counting it reports."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_infer_mode_prints_table_and_json_line():
    res = subprocess.run(
        [sys.executable, os.path.join("tools", "benchmark.py"), "infer", "--configs",
         "light:32:4:2", "--repeats", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[-1].startswith("JSON: ")
    out = json.loads(lines[-1][len("JSON: "):])
    seconds = out["infer"]["light:32:4:2"]
    assert 0 < seconds < 60
    (row,) = out["details"]
    assert row["min_s"] <= row["median_s"] <= row["max_s"] and row["repeats"] == 1
    assert row["gflop"] > 0 and row["gflops"] > 0 and 0 < row["peak_fraction"] < 1.5
    assert out["peak_gflops"]["float32"] > 0
    assert 100 < row["peak_rss_mib"] == out["peak_rss_mib"]["light:32:4:2"] < 64 * 1024
    assert any(line.startswith("light:32:4:2") for line in lines)  # the table row


def test_tflite_mode_adds_a_saved_model_row_in_the_mixed_precision():
    """--mixed_precision in tflite mode: the float32 SavedModel row, one built in bfloat16
    (what --phase export writes with the flag, tests/export/test_run.py) whose peak fraction
    is taken against the bfloat16 peak, then the TFLite rows against the float32 one."""
    sys.path.insert(0, ROOT)
    from tools.benchmarking import bench_tflite
    rows = bench_tflite("light:32:4:2", repeats=1, warmup=0, quantizations=("float32",),
                        peak=1e3, half_peak=1e4, mixed_precision="mixed_bfloat16")
    assert [r["config"] for r in rows] == ["light:32:4:2 saved_model",
                                           "light:32:4:2 saved_model bfloat16",
                                           "light:32:4:2 tflite float32"]
    assert [r["quantization"] for r in rows] == ["float32", "mixed_bfloat16", "float32"]
    for row, peak in zip(rows, (1e3, 1e4, 1e3)):
        assert row["median_s"] > 0
        assert row["peak_fraction"] == pytest.approx(row["gflops"] / peak)


def test_config_specs_and_nominal_flops():
    from tools.benchmarking import make_config, nominal_generator_gflop, parse_spec
    assert parse_spec("light:64:16:4") == dict(light=True, img_size=64, ch=16, n_res=4, n_dis=5)
    assert parse_spec("full:256:64:4")["n_dis"] == 6
    assert parse_spec("light:32:4:2")["n_dis"] == 4  # n_dis 5 does not fit 32 px
    with pytest.raises(ValueError, match="variant:img_size:ch:n_res"):
        parse_spec("light:64:16")
    # the reference's figure: about 105 GFLOP for the light generator at 256 px, ch 64
    assert nominal_generator_gflop(make_config("light:256:64:4")) == pytest.approx(105, rel=0.01)


def test_graph_flops_counts_a_convolution():
    import tensorflow as tf

    from tools.benchmarking import graph_flops
    fn = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "VALID"))
    conc = fn.get_concrete_function(tf.TensorSpec([1, 10, 10, 4], tf.float32),
                                    tf.TensorSpec([3, 3, 4, 8], tf.float32))
    assert graph_flops(conc) == 2 * 8 * 8 * 3 * 3 * 4 * 8


def test_peak_memory_sees_a_large_temporary_allocation():
    import numpy as np

    from tools.benchmarking import PeakMemory
    with PeakMemory() as small:
        pass
    with PeakMemory() as big:
        block = np.ones(300 * 2**20, dtype=np.uint8)  # 300 MiB, touched
        del block
    assert not big.since_start
    assert big.mib - small.mib > 250


def _benchmark(*args):
    return subprocess.run([sys.executable, os.path.join("tools", "benchmark.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_peer_torch_without_the_original_code_says_one_line_and_exits_2(tmp_path):
    res = _benchmark("infer", "--peer", "torch", "--original", str(tmp_path))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"benchmark.py: error: --original {tmp_path}: no networks.py; --peer torch needs a "
        f"checkout of github znxlwm/UGATIT-pytorch (see docs/speed.md)"]


def test_peer_torch_without_torch_says_one_line_and_exits_2(tmp_path):
    (tmp_path / "networks.py").write_text("")
    python = tmp_path / "python"  # a "Python" that cannot import torch
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    res = _benchmark("infer", "--peer", "torch", "--original", str(tmp_path),
                     "--torch_python", str(python))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"benchmark.py: error: --torch_python {python}: cannot import torch; --peer torch needs a "
        f"Python with the torch CPU wheel (see docs/speed.md)"]


def test_peer_torch_with_another_mode_is_refused():
    res = _benchmark("train", "--peer", "torch")
    assert res.returncode == 2
    assert res.stderr.strip() == ("benchmark.py: error: --peer torch works with the infer mode "
                                  "only (not train)")


FAKE_TORCH = """
import types
class _T:
    def __init__(self, value):
        self.value = value
    def float(self):
        return self
    def sum(self):
        return self
    def item(self):
        return self.value
    def __mul__(self, other):
        return self
    def __sub__(self, other):
        return self
class _Ctx:
    def __enter__(self):
        return self
    def __exit__(self, *a):
        return False
__version__ = "0.0-fake"
calls = []
def set_num_threads(n):
    global threads
    threads = n
def get_num_threads():
    return threads
def manual_seed(s):
    pass
def rand(*shape):
    return _T(0.5)
def compile(module):
    return lambda x: (_T(2.0),)
def autocast(device, dtype=None):
    return _Ctx()
def inference_mode():
    return _Ctx()
bfloat16 = "bfloat16"
"""

FAKE_NETWORKS = """
class ResnetGenerator:
    def __init__(self, input_nc, output_nc, ngf, n_blocks, img_size, light):
        self.args = (input_nc, output_nc, ngf, n_blocks, img_size, light)
    def eval(self):
        return self
    def __call__(self, x):
        import torch
        return (torch._T(1.0),)
"""


def test_peer_script_protocol_with_a_stand_in_torch(tmp_path):
    """tools/peer/torch_generator.py: a hello line, one JSON answer per 'MODE RUNS' request
    (with the RSS peak), one error line and exit 2 on a bad request. A stand-in `torch` and
    `networks` module replace the real ones (the real peer is measured in docs/speed.md)."""
    (tmp_path / "torch.py").write_text(FAKE_TORCH)
    (tmp_path / "networks.py").write_text(FAKE_NETWORKS)
    res = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "peer", "torch_generator.py"),
         "--original", str(tmp_path), "--img_size", "32", "--ch", "4", "--n_res", "2",
         "--light", "--threads", "3"],
        input="eager 2\ncompiled_bf16 1\ncompiled 0\nfast 1\n", capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    answers = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert res.returncode == 2
    assert answers[0] == {"ready": True, "torch": "0.0-fake", "threads": 3}
    assert [a["mode"] for a in answers[1:4]] == ["eager", "compiled_bf16", "compiled"]
    assert [len(a["times"]) for a in answers[1:4]] == [2, 1, 0]
    assert all(t >= 0 for a in answers[1:4] for t in a["times"])
    assert all(a["peak_rss_mib"] > 1 for a in answers[1:4])
    assert answers[4] == {"error": "bad request 'fast 1': expected 'MODE RUNS', MODE one of "
                                   "eager, compiled, compiled_bf16"}


def _side_by_side(tmp_path, *args):
    """The infer mode with --peer torch against the stand-in peer (the fake torch above):
    the JSON line."""
    (tmp_path / "torch.py").write_text(FAKE_TORCH)
    (tmp_path / "networks.py").write_text(FAKE_NETWORKS)
    python = tmp_path / "torch_python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={tmp_path} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    res = _benchmark("infer", "--configs", "light:32:4:2", "--no_peak", "--peer", "torch",
                     "--json", "--original", str(tmp_path), "--torch_python", str(python), *args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1][len("JSON: "):])


def test_infer_side_by_side_with_a_stand_in_peer(tmp_path):
    """--peer torch: our float32 and bfloat16 rows, then the three peer rows, each with its
    ratio to ours in the matching precision (the stand-in peer is the fake torch above)."""
    out = _side_by_side(tmp_path, "--repeats", "3", "--mixed_precision", "mixed_bfloat16")
    rows = {r["config"]: r for r in out["details"]}
    names = [f"light:32:4:2 {n}" for n in ("ours float32", "ours bfloat16", "torch eager",
                                           "torch compiled", "torch compiled_bf16")]
    assert list(rows) == names
    assert all(r["repeats"] == 3 and r["peak_rss_mib"] > 1 for r in rows.values())
    f32, bf16 = rows[names[0]]["median_s"], rows[names[1]]["median_s"]
    for name, ours in ((names[2], f32), (names[3], f32), (names[4], bf16)):
        assert out["ratios"][name] == pytest.approx(rows[name]["median_s"] / ours)
    assert rows[names[2]]["torch"] == "0.0-fake"


@pytest.mark.slow
def test_kernels_all_times_ours_with_each_kernel_set_beside_the_peer(tmp_path):
    """--kernels all: ours with the frozen, the inference and the reference kernels in the
    same rounds; the peer's ratio is against the first (frozen, the default)."""
    out = _side_by_side(tmp_path, "--repeats", "2", "--kernels", "all")
    rows = {r["config"]: r for r in out["details"]}
    ours = "light:32:4:2 ours float32"
    assert list(rows)[:3] == [ours, ours + " inference kernels", ours + " reference kernels"]
    assert [rows[k]["kernels"] for k in list(rows)[:3]] == ["frozen", "inference", "reference"]
    eager = "light:32:4:2 torch eager"
    assert out["ratios"][eager] == pytest.approx(rows[eager]["median_s"]
                                                 / rows[ours]["median_s"])


def test_kernels_all_without_the_peer_is_refused():
    res = _benchmark("infer", "--kernels", "all")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "benchmark.py: error: --kernels all works with --peer torch only (ours is timed "
        "with each kernel set in the same rounds as the peer)")


def test_kernel_sets_are_the_models():
    from tools.benchmarking import KERNEL_SETS
    from ugatit_tf.model.layers import KERNELS
    assert KERNEL_SETS == KERNELS
