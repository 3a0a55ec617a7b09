"""evaluate/metrics.py: KID, FID and the paired scores against independent float64
references (straightforward loops) and skimage's SSIM."""

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from ugatit_tf.evaluate import metrics as ev


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
    assert rel(ev.fid(real, fake, method="svd"), ev.fid(real, fake)) < 1e-8
    assert ev.fid(real, fake, method="auto") == ev.fid(real, fake, method=ev.fid_method(
        len(real), len(fake), real.shape[1]))
    with pytest.raises(ValueError, match=r"^method must be one of \('sqrtm', 'eigh', 'svd', "
                                         r"'auto'\); got 'bogus'$"):
        ev.fid(real, fake, method="bogus")


def test_fid_svd_and_auto_match_sqrtm_and_eigh():
    rng = np.random.default_rng(4)
    for n_real, n_fake, dim in ((10, 7, 64), (5, 5, 16), (30, 40, 300)):
        real = rng.normal(size=(n_real, dim))
        fake = 1.3 * rng.normal(size=(n_fake, dim)) + 0.2
        want = ev.fid(real, fake, method="sqrtm" if dim < 100 else "eigh")
        assert ev.fid_svd(real, fake) == pytest.approx(want, rel=1e-7)
        assert ev.fid(real, fake, method="auto") == ev.fid_svd(real, fake)
    assert ev.fid_svd(real, real) == pytest.approx(0.0, abs=1e-8 * np.sum(real ** 2))
    big = rng.normal(size=(20, 8))  # more images than features: auto takes eigh
    assert ev.fid_method(20, 20, 8) == "eigh" and ev.fid_method(40, 40, 2048) == "svd"
    assert ev.fid(big, big + 1.0, method="auto") == pytest.approx(ev.fid(big, big + 1.0, method="eigh"))



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
