"""evaluate/folders.py: scores between folders of images, and the JSON reports."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from ugatit_tf.evaluate import folders as fo
from ugatit_tf.evaluate import metrics as ev


def save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_paired_score_folders(tmp_path):
    rng = np.random.default_rng(0)
    truth_dir, trans_dir, in_dir = tmp_path / "testA_paired", tmp_path / "out", tmp_path / "testA"
    expected_model, expected_id = [], []
    for i, name in enumerate(["a", "b", "c"]):
        gt = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
        inp = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
        pred = (gt.astype(int) + rng.integers(-15, 16, gt.shape)).clip(0, 255).astype(np.uint8)
        save(truth_dir / f"{name}.png", gt)
        save(in_dir / f"{name}.bmp", inp)  # other (lossless) extension: match on stem
        if i == 2:  # different size: resized (bicubic) to the truth's size
            big = np.asarray(Image.fromarray(pred).resize((40, 48), Image.BICUBIC))
            save(trans_dir / f"{name}.png", big)
            pred = np.asarray(Image.fromarray(big).resize((20, 24), Image.BICUBIC))
        else:
            save(trans_dir / f"{name}.png", pred)
        expected_model.append((pred, gt))
        expected_id.append((inp, gt))
    save(trans_dir / "extra.png", np.zeros((24, 20, 3), np.uint8))
    (in_dir / "notes.txt").write_text("not an image")

    out = fo.paired_score_folders(trans_dir, truth_dir, in_dir)
    assert out["n"] == 3
    for key, pairs in (("model", expected_model), ("identity", expected_id)):
        ref = ev.paired_scores(pairs)
        for metric in ("l1", "psnr", "ssim"):
            assert out[key][metric] == pytest.approx(ref[metric], rel=1e-12), (key, metric)
    assert out["model"]["ssim"] > out["identity"]["ssim"]
    assert [e["name"] for e in out["per_image"]] == ["a", "b", "c"]
    assert out["ignored_translated"] == ["extra.png"]

    # Missing matches: a clear error naming the files.
    (trans_dir / "b.png").unlink()
    (in_dir / "c.bmp").unlink()
    with pytest.raises(FileNotFoundError) as info:
        fo.paired_score_folders(trans_dir, truth_dir, in_dir)
    msg = str(info.value)
    assert "b.png" in msg and "translated" in msg and str(trans_dir) in msg
    assert "c.png" in msg and "input" in msg and str(in_dir) in msg

    # Two files with one stem are ambiguous.
    save(trans_dir / "b.png", expected_model[1][0])
    save(trans_dir / "b.jpg", expected_model[1][0])
    with pytest.raises(ValueError, match="ambiguous"):
        fo.paired_score_folders(trans_dir, truth_dir, in_dir)


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "report.json"
    obj = {
        "kid_x100": np.float64(11.61),
        "n": np.int64(3),
        "arr": np.arange(3),
        "psnr": math.inf,
        "dir": tmp_path,
        "nested": [{"x": np.float32(0.5)}],
    }
    fo.write_report(path, obj)
    fo.write_report(path, obj)  # overwrite in place
    data = json.loads(path.read_text())
    assert data == {
        "kid_x100": 11.61, "n": 3, "arr": [0, 1, 2], "psnr": None,
        "dir": str(tmp_path), "nested": [{"x": 0.5}],
    }
    assert sorted(os.listdir(path.parent)) == ["report.json"]  # no temp files left
    with pytest.raises(TypeError):
        fo.write_report(path, {"bad": object()})
    assert json.loads(path.read_text())["n"] == 3  # old file intact
    assert sorted(os.listdir(path.parent)) == ["report.json"]


@pytest.mark.slow
def test_kid_fid_between_folders_end_to_end(extractor, tmp_path):
    rng = np.random.default_rng(1)
    fake_dir, real_dir = tmp_path / "fake", tmp_path / "real"
    fake = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    real = np.clip(rng.normal(128, 20, (5, 32, 32, 3)), 0, 255).astype(np.uint8)
    for i, im in enumerate(fake):
        save(fake_dir / f"f{i}.png", im)
    for i, im in enumerate(real):
        save(real_dir / f"r{i}.png", im)
    seen = []
    # fid_method='eigh': scipy's sqrtm on 2048x2048 takes tens of seconds on
    # a small CPU; 'sqrtm' == 'eigh' is checked on 64-d features above.
    out = fo.kid_fid_between_folders(
        fake_dir, real_dir, extractor, n_subsets=10, subset_size=1000, seed=0,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
        fid_method="eigh",
    )
    assert seen == [("fake", 3, 4), ("fake", 4, 4), ("real", 3, 5), ("real", 5, 5)]
    assert out["n_fake"] == 4 and out["n_real"] == 5 and out["subset_size"] == 4
    assert out["weights"] is None
    f_fake, f_real = extractor.from_uint8(fake), extractor.from_uint8(real)
    mean, std = ev.kid(f_real, f_fake, n_subsets=10, subset_size=1000, seed=0)
    assert out["kid"] == pytest.approx(mean, rel=1e-9, abs=1e-15)
    assert out["kid_x100"] == pytest.approx(100 * out["kid"], rel=1e-12)
    assert out["kid_x100_std"] == pytest.approx(100 * std, rel=1e-9, abs=1e-13)
    # (Recomputing FID at D=2048 costs seconds; the formula is checked at
    # 64-d above, and the KID match shows the folder features are right.)
    assert np.isfinite(out["fid"]) and out["fid"] > 0
    fo.write_report(tmp_path / "kid.json", out)
    assert json.loads((tmp_path / "kid.json").read_text())["n_real"] == 5
