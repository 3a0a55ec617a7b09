"""tools/benchmark.py: the infer mode end to end on a tiny config (subprocess, JSON line),
and the FLOP counting it reports."""

import importlib.util
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


@pytest.mark.slow
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


def _python_seeing(folder):
    """A "Python" (this one) that imports from `folder` first: the stand-in torch Python."""
    python = folder / "torch_python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={folder} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    return python


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
        f"benchmark.py: error: --torch_python {python}: cannot import torch; --peer torch in "
        f"the infer mode needs a Python with torch (see docs/speed.md)"]


def test_train_peer_without_torchvision_names_it(tmp_path):
    """The training peer needs what the original's UGATIT.py imports: a Python with torch but
    not torchvision is refused before any work, naming the missing module."""
    (tmp_path / "UGATIT.py").write_text("")
    (tmp_path / "torch.py").write_text("")
    python = _python_seeing(tmp_path)
    res = _benchmark("train", "--peer", "torch", "--original", str(tmp_path),
                     "--torch_python", str(python))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"benchmark.py: error: --torch_python {python}: cannot import torchvision; --peer torch "
        f"in the train mode needs a Python with torch, torchvision, scipy, cv2 (see "
        f"docs/speed.md)"]


def test_peer_torch_with_the_tflite_mode_is_refused():
    res = _benchmark("tflite", "--peer", "torch")
    assert res.returncode == 2
    assert res.stderr.strip() == ("benchmark.py: error: --peer torch works with the infer and "
                                  "train modes only (not tflite)")


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
    python = _python_seeing(tmp_path)
    res = _benchmark("infer", "--configs", "light:32:4:2", "--no_peak", "--peer", "torch",
                     "--json", "--original", str(tmp_path), "--torch_python", str(python), *args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1][len("JSON: "):])


@pytest.mark.slow
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


# A stand-in for the original's training code: torch's DataLoader iterator (without the
# Python 2 `next` the original calls), its parse_args and UGATIT class. Its loop prints the
# original's line with an elapsed time of 0.25 * step ** 2 seconds.
FAKE_DATALOADER = """
class _BaseDataLoaderIter:
    def __next__(self):
        return 1
"""

FAKE_MAIN = """
import argparse
def parse_args():
    p = argparse.ArgumentParser()
    for flag in ("--light", "--dataset", "--device", "--batch_size", "--img_size", "--ch",
                 "--n_res", "--decay_flag", "--print_freq", "--save_freq"):
        p.add_argument(flag)
    print("the original prints its settings")
    return p.parse_args()
"""

FAKE_UGATIT = """
import json, os, sys
from PIL import Image
from torch.utils.data.dataloader import _BaseDataLoaderIter
class UGATIT:
    def __init__(self, args):
        self.args = args
        print("##### Information #####")
    def build_model(self):
        root = os.path.join("dataset", self.args.dataset)
        sizes = {f: [Image.open(os.path.join(root, f, n)).size for n in sorted(os.listdir(
            os.path.join(root, f)))] for f in sorted(os.listdir(root))}
        sys.stderr.write(json.dumps({"flags": vars(self.args), "sizes": sizes}) + "\\n")
    def train(self):
        _BaseDataLoaderIter().next()
        for step in range(1, self.iteration + 1):
            print("[%5d/%5d] time: %4.4f d_loss: %.8f, g_loss: %.8f"
                  % (step, self.iteration, 0.25 * step ** 2, 1.0, 2.0))
"""


def _stand_in_original(tmp_path):
    """A folder with the stand-in torch package and original's training code; a "Python"
    that sees it."""
    (tmp_path / "torch" / "utils" / "data").mkdir(parents=True)
    (tmp_path / "torch" / "__init__.py").write_text(FAKE_TORCH)
    (tmp_path / "torch" / "utils" / "__init__.py").write_text("")
    (tmp_path / "torch" / "utils" / "data" / "__init__.py").write_text("")
    (tmp_path / "torch" / "utils" / "data" / "dataloader.py").write_text(FAKE_DATALOADER)
    (tmp_path / "main.py").write_text(FAKE_MAIN)
    (tmp_path / "UGATIT.py").write_text(FAKE_UGATIT)
    for module in ("torchvision", "scipy", "cv2"):
        if importlib.util.find_spec(module) is None:
            (tmp_path / f"{module}.py").write_text("")
    return _python_seeing(tmp_path)


def test_train_peer_script_protocol_with_a_stand_in_original(tmp_path):
    """tools/peer/torch_train.py: writes the original's data set layout (4 random images of
    img_size + 30 pixels per folder), builds UGATIT with the flags that keep samples,
    checkpoints and the learning-rate decay out of the timed loop, makes `next` work on
    torch's DataLoader iterator, and answers each 'train RUNS' with the differences of the
    elapsed times the loop printed; anything the original prints stays out of the JSON."""
    python = _stand_in_original(tmp_path)
    res = subprocess.run(
        [str(python), os.path.join(ROOT, "tools", "peer", "torch_train.py"),
         "--original", str(tmp_path), "--img_size", "34", "--ch", "4", "--n_res", "2",
         "--light", "--threads", "3", "--warmup", "1"],
        input="train 3\ntrain 0\ncompiled 1\n", capture_output=True, text=True, timeout=60)
    answers = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert res.returncode == 2, res.stderr[-2000:]
    assert answers[0] == {"ready": True, "torch": "0.0-fake", "threads": 3}
    assert answers[1]["mode"] == "train" and answers[1]["times"] == [0.25, 0.75, 1.25]
    assert answers[2]["times"] == [] and answers[1]["peak_rss_mib"] > 1
    assert answers[3] == {"error": "bad request 'compiled 1': expected 'train RUNS'"}
    built = json.loads(res.stderr.strip().splitlines()[0])
    assert {k: built["flags"][k] for k in ("light", "device", "decay_flag", "img_size", "ch",
                                           "n_res", "batch_size", "print_freq")} == {
        "light": "True", "device": "cpu", "decay_flag": "False", "img_size": "34", "ch": "4",
        "n_res": "2", "batch_size": "1", "print_freq": str(10 ** 9)}
    assert built["sizes"] == {f: [[64, 64]] * 4 for f in ("testA", "testB", "trainA", "trainB")}


def test_train_peer_iteration_seconds_are_differences_of_the_printed_elapsed_times():
    sys.path.insert(0, ROOT)
    from tools.peer.torch_train import iteration_seconds
    printed = ("[    1/    3] time: 2.5000 d_loss: 1.00000000, g_loss: 2.00000000\n"
               "[    2/    3] time: 4.2500 d_loss: 1.00000000, g_loss: 2.00000000\n"
               "[    3/    3] time: 7.0001 d_loss: 1.00000000, g_loss: 2.00000000\n")
    assert iteration_seconds(printed) == [2.5, 1.75, 2.7501]


@pytest.mark.slow
def test_train_side_by_side_with_a_stand_in_peer(tmp_path):
    """train --peer torch: our iteration, then the original's loop, interleaved; the peer's
    row carries its median over ours (the stand-in's iterations take 0.25, 0.75, 1.25 s...)."""
    python = _stand_in_original(tmp_path)
    res = _benchmark("train", "--configs", "light:32:4:2", "--no_peak", "--peer", "torch",
                     "--json", "--repeats", "2", "--warmup", "0", "--original", str(tmp_path),
                     "--torch_python", str(python))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1][len("JSON: "):])
    rows = {r["config"]: r for r in out["details"]}
    ours, peer = "light:32:4:2 ours float32", "light:32:4:2 torch train"
    assert list(rows) == [ours, peer]
    # one request per round, each a fresh run of the loop: its first iteration each time
    assert rows[peer]["repeats"] == 2 and rows[peer]["median_s"] == 0.25
    assert rows[ours]["repeats"] == 2 and rows[ours]["train_kernels"] == "reference"
    assert out["ratios"][peer] == pytest.approx(0.25 / rows[ours]["median_s"])
