"""Tests for ugatit_tf.evaluation (KID / FID / paired metrics / folders).

The Inception tests use ``InceptionFeatureExtractor(weights=None)`` (random,
seeded weights): no download is needed.
"""

import hashlib
import json
import math
import os
import urllib.error

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from ugatit_tf.evaluate import metrics as ev


# ---------------------------------------------------------------------------
# Independent reference implementations (straightforward loops, float64)
# ---------------------------------------------------------------------------


def ref_poly_kernel(a, b):
    d = a.shape[0]
    return (float(np.dot(a, b)) / d + 1.0) ** 3


def ref_mmd2_unbiased(x, y):
    m, n = len(x), len(y)
    s_xx = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                s_xx += ref_poly_kernel(x[i], x[j])
    s_yy = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                s_yy += ref_poly_kernel(y[i], y[j])
    s_xy = 0.0
    for i in range(m):
        for j in range(n):
            s_xy += ref_poly_kernel(x[i], y[j])
    return s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)


def ref_kid(real, fake, n_subsets, subset_size, seed):
    """Binkowski et al.'s polynomial_mmd_averages with the documented
    sampling order (fake indices, then real indices, per subset)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(real), len(fake))
    vals = []
    for _ in range(n_subsets):
        fi = rng.choice(len(fake), m, replace=False)
        ri = rng.choice(len(real), m, replace=False)
        vals.append(ref_mmd2_unbiased(fake[fi], real[ri]))
    vals = np.array(vals)
    return vals.mean(), vals.std()


def ref_stats(x):
    n, d = x.shape
    mu = np.zeros(d)
    for row in x:
        mu += row
    mu /= n
    cov = np.zeros((d, d))
    for row in x:
        c = row - mu
        cov += np.outer(c, c)
    return mu, cov / (n - 1)


def ref_fid(x, y):
    """Tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), via symmetric
    eigendecompositions (no sqrtm)."""
    mu1, s1 = ref_stats(x)
    mu2, s2 = ref_stats(y)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_covmean = np.sum(np.sqrt(np.clip(inner, 0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(1234)
    # Non-negative, post-ReLU-like features of different set sizes.
    real = np.abs(rng.normal(0.5, 1.0, size=(200, 64)))
    fake = np.abs(rng.normal(0.7, 1.2, size=(150, 64)))
    return real, fake


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------


def test_kid_matches_reference_full_subsets(feats):
    real, fake = feats
    mean, std = ev.kid(real, fake, n_subsets=2, subset_size=1000, seed=0)
    ref_mean, ref_std = ref_kid(real, fake, 2, 1000, 0)
    assert mean > 0
    assert rel(mean, ref_mean) < 1e-6
    assert abs(std - ref_std) <= 1e-6 * abs(ref_mean)


def test_kid_matches_reference_small_subsets(feats):
    real, fake = feats
    mean, std = ev.kid(real, fake, n_subsets=5, subset_size=40, seed=7)
    ref_mean, ref_std = ref_kid(real, fake, 5, 40, 7)
    assert rel(mean, ref_mean) < 1e-6
    assert rel(std, ref_std) < 1e-6
    vals = ev.kid_subset_values(real, fake, n_subsets=5, subset_size=40, seed=7)
    assert vals.shape == (5,)
    assert np.isclose(vals.mean(), mean, rtol=1e-12)


def test_kid_whole_sets_equals_single_mmd(feats):
    # Equal sizes, subset >= n: every subset is a permutation of the whole
    # sets, so every value is the whole-set unbiased MMD^2 (sampling-free check).
    real, fake = feats
    real = real[:150]
    mean, std = ev.kid(real, fake, n_subsets=3, subset_size=500, seed=3)
    ref = ref_mmd2_unbiased(fake, real)
    assert rel(mean, ref) < 1e-6
    assert std <= 1e-9 * abs(ref)
    assert rel(ev.mmd2_unbiased(fake, real), ref) < 1e-9


def test_kid_precomputed_and_per_subset_paths_agree(feats, monkeypatch):
    real, fake = feats
    a = ev.kid_subset_values(real, fake, n_subsets=6, subset_size=50, seed=11)
    monkeypatch.setattr(ev, "_KID_PRECOMPUTE_MAX_ROWS", 0)
    b = ev.kid_subset_values(real, fake, n_subsets=6, subset_size=50, seed=11)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=0)


def test_kid_self_near_zero_and_shift_positive(feats):
    real, _ = feats
    self_mean, _ = ev.kid(real, real, n_subsets=20, subset_size=100, seed=0)
    shifted_mean, shifted_std = ev.kid(real, real + 0.5, n_subsets=20, subset_size=100, seed=0)
    assert shifted_mean > 0
    assert shifted_mean > 10 * shifted_std
    assert abs(self_mean) < 1e-2 * shifted_mean
    # Two independent draws of one distribution: ~0 as well.
    rng = np.random.default_rng(5)
    a = np.abs(rng.normal(0.5, 1.0, size=(300, 64)))
    b = np.abs(rng.normal(0.5, 1.0, size=(300, 64)))
    same_mean, _ = ev.kid(a, b, n_subsets=20, subset_size=150, seed=0)
    assert abs(same_mean) < 2e-2 * shifted_mean


def test_kid_seed_reproducible_and_input_checks(feats):
    real, fake = feats
    assert ev.kid(real, fake, 4, 30, seed=2) == ev.kid(real, fake, 4, 30, seed=2)
    assert ev.kid(real, fake, 4, 30, seed=2) != ev.kid(real, fake, 4, 30, seed=3)
    with pytest.raises(ValueError, match="feature dimensions"):
        ev.kid(real, fake[:, :10])
    with pytest.raises(ValueError, match="at least 2"):
        ev.kid(real[:1], fake)
    assert ev.format_kid(0.1161, 0.0057) == "KIDx100 = 11.61 +- 0.57"


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------


def test_fid_matches_reference(feats):
    real, fake = feats
    value = ev.fid(real, fake)
    ref = ref_fid(real, fake)
    assert value > 0
    assert rel(value, ref) < 1e-6


def test_fid_identical_near_zero_and_pure_shift(feats):
    real, _ = feats
    scale = np.trace(np.cov(real, rowvar=False))
    assert abs(ev.fid(real, real)) < 1e-8 * scale
    shift = np.linspace(-1, 1, real.shape[1])
    # Same covariance, means differ by `shift`: FID = ||shift||^2.
    assert rel(ev.fid(real, real + shift), float(shift @ shift)) < 1e-6


def test_fid_singular_covariance_is_finite():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 64))  # n < d: rank-deficient covariances
    y = rng.normal(0.3, 1.0, size=(25, 64))
    value = ev.fid(x, y)
    assert np.isfinite(value)
    assert rel(value, ref_fid(x, y)) < 1e-3
    assert abs(ev.fid(x, x)) < 1e-3 * np.trace(np.cov(x, rowvar=False))
    assert rel(ev.fid(x, y, method="eigh"), value) < 1e-6


def test_fid_methods_agree(feats):
    real, fake = feats
    assert rel(ev.fid(real, fake, method="eigh"), ev.fid(real, fake)) < 1e-8
    with pytest.raises(ValueError, match="method"):
        ev.fid(real, fake, method="svd")


# ---------------------------------------------------------------------------
# Paired metrics
# ---------------------------------------------------------------------------


def structured_pair():
    h, w = 48, 40
    yy, xx = np.mgrid[0:h, 0:w]
    r = (255 * xx / (w - 1)).astype(np.float64)
    g = np.where(((yy // 8) + (xx // 8)) % 2 == 0, 30.0, 220.0)
    b = 127.5 + 100 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    a = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
    rng = np.random.default_rng(9)
    noisy = (a.astype(np.float64) + rng.normal(0, 12, a.shape))
    noisy = np.roll(noisy, 1, axis=1).clip(0, 255).astype(np.uint8)
    return a, noisy


def sk_ssim(a, b, **kw):
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, **kw,
    )


def test_ssim_matches_skimage_random_and_structured():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    c = (a.astype(int) + rng.integers(-20, 21, a.shape)).clip(0, 255).astype(np.uint8)
    for x, y in [(a, b), (a, c), structured_pair()]:
        ours = ev.ssim(x, y)
        ref = sk_ssim(x, y, channel_axis=-1)
        assert abs(ours - ref) < 1e-6, (ours, ref)
    # Single channel (H, W).
    x, y = structured_pair()
    assert abs(ev.ssim(x[..., 1], y[..., 1]) - sk_ssim(x[..., 1], y[..., 1])) < 1e-6
    assert ev.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 11x11"):
        ev.ssim(a[:10, :10], b[:10, :10])


def test_psnr_and_l1_hand_math():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[1, 2, 0] = 10
    b[3, 3, 2] = 20
    assert ev.l1(b, a) == pytest.approx(30 / 48, rel=1e-12)
    mse = (100 + 400) / 48
    assert ev.psnr(b, a) == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-12)
    assert ev.psnr(a, a) == math.inf
    assert ev.l1(a, a) == 0.0
    # uint8 must not wrap around: |0 - 255| = 255.
    full = np.full_like(a, 255)
    assert ev.l1(a, full) == 255.0
    assert ev.psnr(a, full) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        ev.l1(a, a[:3])


def test_paired_scores_means():
    x, y = structured_pair()
    rng = np.random.default_rng(3)
    z = rng.integers(0, 256, x.shape, dtype=np.uint8)
    out = ev.paired_scores([(y, x), (z, x)])
    assert out["n"] == 2
    assert out["l1"] == pytest.approx((ev.l1(y, x) + ev.l1(z, x)) / 2, rel=1e-12)
    assert out["psnr"] == pytest.approx((ev.psnr(y, x) + ev.psnr(z, x)) / 2, rel=1e-12)
    assert out["ssim"] == pytest.approx((ev.ssim(y, x) + ev.ssim(z, x)) / 2, rel=1e-12)
    with pytest.raises(ValueError):
        ev.paired_scores([])


# ---------------------------------------------------------------------------
# Folders and JSON
# ---------------------------------------------------------------------------


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

    out = ev.paired_score_folders(trans_dir, truth_dir, in_dir)
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
        ev.paired_score_folders(trans_dir, truth_dir, in_dir)
    msg = str(info.value)
    assert "b.png" in msg and "translated" in msg and str(trans_dir) in msg
    assert "c.png" in msg and "input" in msg and str(in_dir) in msg

    # Two files with one stem are ambiguous.
    save(trans_dir / "b.png", expected_model[1][0])
    save(trans_dir / "b.jpg", expected_model[1][0])
    with pytest.raises(ValueError, match="ambiguous"):
        ev.paired_score_folders(trans_dir, truth_dir, in_dir)


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
    ev.write_json_atomic(path, obj)
    ev.write_json_atomic(path, obj)  # overwrite in place
    data = json.loads(path.read_text())
    assert data == {
        "kid_x100": 11.61, "n": 3, "arr": [0, 1, 2], "psnr": None,
        "dir": str(tmp_path), "nested": [{"x": 0.5}],
    }
    assert sorted(os.listdir(path.parent)) == ["report.json"]  # no temp files left
    with pytest.raises(TypeError):
        ev.write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text())["n"] == 3  # old file intact
    assert sorted(os.listdir(path.parent)) == ["report.json"]


# ---------------------------------------------------------------------------
# Inception weights resolution (no model build, no network)
# ---------------------------------------------------------------------------


def test_missing_imagenet_weights_message(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no internet (test)")

    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)

    with pytest.raises(ev.InceptionWeightsError) as info:
        ev.InceptionFeatureExtractor(weights="imagenet")
    msg = str(info.value)
    cache_path = str(keras_home / "models" / ev.INCEPTION_NOTOP_FILENAME)
    assert calls == [ev.INCEPTION_NOTOP_URL]
    assert "could not be found or downloaded" in msg
    assert cache_path in msg
    assert "Keras cache" in msg
    assert "`--inception_weights PATH`" in msg
    assert "`.h5` / `.weights.h5`" in msg
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert "no internet (test)" in msg


def test_imagenet_weights_found_in_keras_cache(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    keras_home = tmp_path / "kh"
    cached = keras_home / "models" / ev.INCEPTION_NOTOP_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stand-in weights")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(ev, "INCEPTION_NOTOP_MD5", hashlib.md5(b"stand-in weights").hexdigest())
    assert ev.imagenet_weights_cache_path() == str(cached)
    assert ev.resolve_inception_weights("imagenet") == str(cached)


def test_missing_weights_path(tmp_path):
    missing = tmp_path / "nope" / "inception.weights.h5"
    with pytest.raises(ev.InceptionWeightsError) as info:
        ev.InceptionFeatureExtractor(weights=str(missing))
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)
    assert ev.resolve_inception_weights(None) is None


# ---------------------------------------------------------------------------
# End to end with a randomly initialised InceptionV3 (no download)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extractor():
    return ev.InceptionFeatureExtractor(weights=None, batch_size=3, seed=0)


def test_extractor_input_paths(extractor):
    rng = np.random.default_rng(0)
    ims = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    f8 = extractor.from_uint8(ims)
    assert f8.shape == (4, ev.FEATURE_DIM) and f8.dtype == np.float64
    assert np.all(np.isfinite(f8)) and f8.std(axis=0).max() > 0
    f11 = extractor.from_minus1_1(ims.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(f11, f8, rtol=1e-4, atol=1e-5 * np.abs(f8).max())
    np.testing.assert_array_equal(extractor(ims), f8)  # dtype dispatch
    # Mixed sizes in one call; single image on its own.
    mixed = [ims[0], np.asarray(Image.fromarray(ims[1]).resize((40, 36)))]
    assert extractor(mixed).shape == (2, ev.FEATURE_DIM)
    np.testing.assert_allclose(extractor(ims[0]), f8[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        extractor.from_minus1_1(ims.astype(np.float32))
    with pytest.raises(TypeError):
        extractor.from_uint8(ims.astype(np.float32))


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
    out = ev.kid_fid_between_folders(
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
    ev.write_json_atomic(tmp_path / "kid.json", out)
    assert json.loads((tmp_path / "kid.json").read_text())["n_real"] == 5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside keras save_weights
def test_weights_path_round_trip_and_bad_file(extractor, tmp_path):
    # Builds two more networks (a few seconds each).
    path = tmp_path / "inception_random.weights.h5"
    extractor.model.save_weights(str(path))
    loaded = ev.InceptionFeatureExtractor(weights=str(path), batch_size=2)
    assert loaded.weights_path == str(path)
    ims = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.from_uint8(ims), extractor.from_uint8(ims), rtol=1e-6, atol=1e-7)

    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ev.InceptionWeightsError, match="Could not load Inception weights"):
        ev.InceptionFeatureExtractor(weights=str(bad))
