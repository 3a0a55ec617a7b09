"""The eval bar chart: one panel per score and direction, bars equal to eval.json's values."""

import os

import numpy as np
from PIL import Image

from ugatit_tf.evaluate.plots import direction_panels, eval_figure, write_eval_chart


def scores(kid, fid, paired=True):
    out = {"kid_x100": kid, "kid_x100_std": 0.5, "fid": fid,
           "identity": {"kid_x100": 20.0, "kid_x100_std": 1.0, "fid": 90.0}, "paired": None}
    if paired:
        out["paired"] = {"model": {"l1": 40.0, "psnr": 13.0, "ssim": 0.3},
                         "identity": {"l1": 60.0, "psnr": 10.0, "ssim": 0.35},
                         "target_mean": {"l1": 45.0, "psnr": 12.0, "ssim": 0.4}}
    return out


REPORT = {"dataset": "demo", "img_size": 64, "checkpoint": "x/ckpt-20", "step": 20,
          "directions": {"A2B": scores(5.0, 30.0), "B2A": scores(7.0, 35.0, paired=False)}}


def test_panels_follow_the_report():
    titles = [t for t, _, _ in direction_panels(REPORT["directions"]["A2B"])]
    assert titles == ["KID x100 (lower is better)", "FID (lower is better)",
                      "paired L1 (lower is better)", "paired PSNR dB (higher is better)",
                      "paired SSIM (higher is better)"]
    assert len(direction_panels(REPORT["directions"]["B2A"])) == 2  # no ground truth


def test_bar_heights_are_the_scores():
    axes = eval_figure(REPORT).axes
    heights = {ax.get_title(): [p.get_height() for p in ax.patches] for ax in axes
               if ax.get_visible()}
    assert heights["A2B: KID x100 (lower is better)"] == [5.0, 20.0]
    assert heights["B2A: FID (lower is better)"] == [35.0, 90.0]
    assert heights["A2B: paired SSIM (higher is better)"] == [0.3, 0.35, 0.4]
    assert len(heights) == 7  # B2A's three paired panels are hidden


def test_chart_is_a_png_with_usual_permissions(tmp_path):
    path = write_eval_chart(REPORT, str(tmp_path / "eval.png"))
    image = np.asarray(Image.open(path))
    assert image.shape[2] in (3, 4) and image.shape[1] > image.shape[0] > 300
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["eval.png"]  # no temporary file left
