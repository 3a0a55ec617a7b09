"""train/loss_curve.py: per-bin means against numpy, the csv round trip (exact floats), a resumed
run continuing the same bins, and the PNG."""

import math

import numpy as np
import pytest
from PIL import Image

from ugatit_tf.train.loss_curve import CSV_NAME, MAX_POINTS, PNG_NAME, LossCurve

KEYS = ["Discriminator_loss", "D_A_loss", "D_B_loss", "Generator_loss", "G_A_loss", "G_B_loss",
        "G_A_gan", "G_A_cycle", "G_A_identity", "G_A_cam", "G_B_gan", "G_B_cycle",
        "G_B_identity", "G_B_cam", "lr"]


def losses(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{k: float(v) for k, v in zip(KEYS, rng.uniform(0.01, 5.0, len(KEYS)))}
            for _ in range(n)]


def test_bins_hold_the_mean_of_their_iterations(tmp_path):
    total = 3 * MAX_POINTS  # 3 iterations per point
    curve = LossCurve(str(tmp_path), total)
    values = losses(8)
    for step, v in enumerate(values, 1):
        curve.add(step, v)
    assert [(r["step"], r["iterations"]) for r in curve.rows] == [(3, 3), (6, 3), (8, 2)]
    for row, chunk in zip(curve.rows, (values[0:3], values[3:6], values[6:8])):
        for k in KEYS:
            assert row[k] == pytest.approx(np.mean([v[k] for v in chunk]), rel=1e-12)
    assert LossCurve(str(tmp_path), 10).bin_size == 1


def test_csv_round_trip_and_resume_continue_the_curve(tmp_path):
    total = 3 * MAX_POINTS
    values = losses(9, seed=1)
    curve = LossCurve(str(tmp_path), total)
    for step, v in enumerate(values[:7], 1):
        curve.add(step, v)
    curve.write()
    # a run that resumes at 7 reads every row back exactly
    assert LossCurve(str(tmp_path), total, start=7).rows == curve.rows
    # one that resumes from an older checkpoint (5) drops the rows past it, then continues:
    # the bin 4-6 already holds iterations 4 and 5 and takes in 6
    resumed = LossCurve(str(tmp_path), total, start=5)
    assert [(r["step"], r["iterations"]) for r in resumed.rows] == [(3, 3)]
    curve_to_5 = LossCurve(str(tmp_path / "other"), total)
    for step, v in enumerate(values[:5], 1):
        curve_to_5.add(step, v)
    curve_to_5.write()
    resumed = LossCurve(str(tmp_path / "other"), total, start=5)
    for step, v in enumerate(values[5:], 6):
        resumed.add(step, v)
    assert [(r["step"], r["iterations"]) for r in resumed.rows] == [(3, 3), (6, 3), (9, 3)]
    for k in KEYS:
        assert resumed.rows[1][k] == pytest.approx(np.mean([v[k] for v in values[3:6]]),
                                                   rel=1e-12)
    header = (tmp_path / CSV_NAME).read_text().splitlines()[0].split(",")
    assert header[:2] == ["step", "iterations"] and sorted(header[2:]) == sorted(KEYS)


def test_png_is_written_and_survives_missing_values(tmp_path):
    curve = LossCurve(str(tmp_path), 100)
    for step, v in enumerate(losses(30, seed=2), 1):
        if step % 2 == 0:  # n_critic 2 runs: G losses only every other iteration
            v = {k: x for k, x in v.items() if not k.startswith("G")}
        curve.add(step, v)
    path = curve.write()
    assert path == str(tmp_path / PNG_NAME)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1200, 800)
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20
    assert math.isfinite(curve.rows[0]["G_A_loss"])
