"""Scores on features and pixels: KID (unbiased MMD^2, cubic polynomial kernel, random
subsets), FID (Frechet distance of Gaussian fits: sqrtm, eigh, or exact in the samples' span)
and paired L1 / PSNR / SSIM against ground truth. numpy and scipy in float64; the formulas and
conventions are in docs/metrics.md."""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Tuple

import numpy as np
from scipy import linalg, ndimage

# ---------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------


def _as_features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values")
    return x


def polynomial_kernel(x, y, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (x . y / d + coef0) ** degree, d = feature dimension."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d = x.shape[1]
    return (x @ y.T / d + coef0) ** degree


def _mmd2_from_kernels(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = k_xx.shape[0], k_yy.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def mmd2_unbiased(x, y, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 between samples x (m, d) and y (n, d), cubic polynomial
    kernel; for m == n this is Binkowski et al.'s 'unbiased' estimator."""
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("MMD needs at least 2 samples in each set")
    return _mmd2_from_kernels(
        polynomial_kernel(x, x, degree, coef0),
        polynomial_kernel(y, y, degree, coef0),
        polynomial_kernel(x, y, degree, coef0),
    )


# Precompute the full kernel matrices when they are at most this many rows
# (cheaper than recomputing per subset when subsets overlap a lot).
_KID_PRECOMPUTE_MAX_ROWS = 4096


def kid_subset_values(
    features_real,
    features_fake,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Per-subset unbiased MMD^2 values (see :func:`kid`)."""
    real = _as_features(features_real, "features_real")
    fake = _as_features(features_fake, "features_fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    n_real, n_fake = real.shape[0], fake.shape[0]
    m = min(int(subset_size), n_real, n_fake)
    if m < 2:
        raise ValueError(
            f"KID needs at least 2 samples per set; got n_real={n_real}, "
            f"n_fake={n_fake}, subset_size={subset_size}"
        )
    if int(n_subsets) < 1:
        raise ValueError(f"n_subsets must be >= 1; got {n_subsets}")
    rng = np.random.default_rng(seed)
    values = np.empty(int(n_subsets), np.float64)
    precompute = max(n_real, n_fake) <= _KID_PRECOMPUTE_MAX_ROWS
    if precompute:
        k_ff = polynomial_kernel(fake, fake)
        k_rr = polynomial_kernel(real, real)
        k_fr = polynomial_kernel(fake, real)
    for i in range(int(n_subsets)):
        fi = rng.choice(n_fake, m, replace=False)
        ri = rng.choice(n_real, m, replace=False)
        if precompute:
            values[i] = _mmd2_from_kernels(
                k_ff[np.ix_(fi, fi)], k_rr[np.ix_(ri, ri)], k_fr[np.ix_(fi, ri)]
            )
        else:
            f, r = fake[fi], real[ri]
            values[i] = _mmd2_from_kernels(
                polynomial_kernel(f, f), polynomial_kernel(r, r), polynomial_kernel(f, r)
            )
    return values


def kid(
    features_real,
    features_fake,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> Tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of the unbiased MMD^2 over
    random subsets. Multiply both by 100 for the paper's 'KID x 100'."""
    values = kid_subset_values(features_real, features_fake, n_subsets, subset_size, seed)
    return float(values.mean()), float(values.std())


def format_kid(mean: float, std: float) -> str:
    """'KIDx100 = 11.61 +- 0.57' from the raw (unscaled) KID mean and std."""
    return f"KIDx100 = {100.0 * mean:.2f} +- {100.0 * std:.2f}"


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and (ddof=1) covariance of (N, D) features."""
    x = _as_features(features, "features")
    if x.shape[0] < 2:
        raise ValueError("FID needs at least 2 samples per set")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps):
    with warnings.catch_warnings():
        # Singular products (N < D) warn; the result is checked below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                "FID: sqrtm(S1 S2) has a large imaginary component "
                f"({np.max(np.abs(covmean.imag)):.3g})"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1, sigma2):
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix.
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    lam = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)).

    ``method='sqrtm'`` (default, the TTUR / pytorch-fid recipe):
    ``scipy.linalg.sqrtm(S1 S2)``; if that is not finite (singular product),
    retry with ``eps * I`` added to both covariances; small imaginary parts
    from round-off are dropped, large ones raise ValueError. Takes tens of
    seconds for D = 2048 on a 2-core CPU.
    ``method='eigh'``: the same trace from two symmetric eigendecompositions
    (Tr sqrt(S1^1/2 S2 S1^1/2), negative round-off eigenvalues clipped):
    usually several times faster, agrees with 'sqrtm' to ~1e-7 relative;
    handy for frequent monitoring during training.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("mean vectors / covariances have different shapes")
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"method must be 'sqrtm' or 'eigh'; got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_svd(features_real, features_fake) -> float:
    """FID computed exactly in the span of the samples, for n <= feature dimension.

    With centred features A (n1, D), B (n2, D) and covariances S1 = A^T A / (n1 - 1),
    S2 = B^T B / (n2 - 1) (ddof=1, as feature_statistics), the non-zero eigenvalues of S1 S2
    are the squared singular values of A B^T / sqrt((n1-1)(n2-1)), so Tr sqrt(S1 S2) is that
    matrix's nuclear norm. Same value as 'sqrtm' or 'eigh' up to round-off, in milliseconds
    instead of seconds for D = 2048 (and without the round-off of the D - n zero
    eigenvalues)."""
    real = _as_features(features_real, "features_real")
    fake = _as_features(features_fake, "features_fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected (N, D) features of equal D; got {real.shape}, {fake.shape}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least 2 samples per set")
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    a, b = real - mu1, fake - mu2
    c1, c2 = len(a) - 1, len(b) - 1
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a * a) / c1 + np.sum(b * b) / c2 - 2.0 * nuclear)


FID_METHODS = ("sqrtm", "eigh", "svd", "auto")


def fid_method(n_real: int, n_fake: int, dim: int) -> str:
    """What method="auto" uses: 'svd' while neither set has more images than feature
    dimensions, else 'eigh'."""
    return "svd" if max(n_real, n_fake) <= dim else "eigh"


def fid(features_real, features_fake, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """Frechet Inception Distance between two (N, D) feature sets. `method`: 'sqrtm' (the
    TTUR recipe), 'eigh' (faster, same value), 'svd' (`fid_svd`) or 'auto' (`fid_method`)."""
    if method not in FID_METHODS:
        raise ValueError(f"method must be one of {FID_METHODS}; got {method!r}")
    if method == "auto":
        method = fid_method(len(features_real), len(features_fake), np.shape(features_real)[1])
    if method == "svd":
        return fid_svd(features_real, features_fake)
    mu1, s1 = feature_statistics(features_real)
    mu2, s2 = feature_statistics(features_fake)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps, method=method)


# ---------------------------------------------------------------------------
# Paired metrics
# ---------------------------------------------------------------------------


def _pair(pred, truth) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pred)
    b = np.asarray(truth)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def l1(pred, truth) -> float:
    """Mean absolute difference, in the images' units (0..255 for uint8)."""
    a, b = _pair(pred, truth)
    return float(np.mean(np.abs(a - b)))


def psnr(pred, truth, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; inf for identical images."""
    a, b = _pair(pred, truth)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(
    pred,
    truth,
    data_range: float = 255.0,
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
    truncate: float = 3.5,
) -> float:
    """Gaussian-window SSIM (Wang et al. 2004), per channel, averaged.

    (H, W) images are one channel; (H, W, C) images have C channels.
    """
    a, b = _pair(pred, truth)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected (H, W) or (H, W, C) images; got {a.shape}")
    radius = int(truncate * sigma + 0.5)
    win = 2 * radius + 1
    if a.shape[0] < win or a.shape[1] < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win}; got {a.shape[:2]}")
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2

    def blur(x):
        return ndimage.gaussian_filter(x, sigma=sigma, mode="reflect", truncate=truncate)

    scores = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(s[radius:-radius, radius:-radius].mean(dtype=np.float64))
    return float(np.mean(scores))


def paired_scores(pairs: Iterable) -> dict:
    """Means of l1 / psnr / ssim over (pred, truth) pairs:
    ``{'n': N, 'l1': .., 'psnr': .., 'ssim': ..}``."""
    sums = {"l1": 0.0, "psnr": 0.0, "ssim": 0.0}
    n = 0
    for pred, truth in pairs:
        sums["l1"] += l1(pred, truth)
        sums["psnr"] += psnr(pred, truth)
        sums["ssim"] += ssim(pred, truth)
        n += 1
    if n == 0:
        raise ValueError("paired_scores: no image pairs")
    return {"n": n, **{k: v / n for k, v in sums.items()}}
