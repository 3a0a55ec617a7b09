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
    assert any(line.startswith("light:32:4:2") for line in lines)  # the table row


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
