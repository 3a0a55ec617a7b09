"""Evaluation metrics for U-GAT-IT: KID / FID on Inception features, and
paired L1 / PSNR / SSIM for data sets with ground truth (the demo set).

The paper reports KID x 100 (mean +- std over random subsets, e.g.
selfie2anime 11.61 +- 0.57). Everything here is library code; ``main.py
--phase eval`` and the training loop call it through the API below.

API
===

Inception features (TensorFlow / Keras are imported lazily, only here)::

    ex = InceptionFeatureExtractor(weights='imagenet' | None | PATH,
                                   batch_size=32, seed=0)
    ex.from_uint8(images, progress=None)      -> (N, 2048) float64
    ex.from_minus1_1(images, progress=None)   -> (N, 2048) float64
    ex(images, progress=None)                 # dispatch on dtype:
                                              #   uint8 -> from_uint8,
                                              #   float -> from_minus1_1
    ex.from_files(paths, progress=None)       # PIL, converted to RGB
    ex.from_folder(folder, progress=None)     # list_images(folder)

  ``images`` is an array (N, H, W, 3) / (N, H, W, 1) / (H, W, 3) or a
  sequence of (H, W, 3) arrays (sizes may differ). uint8 means pixel values
  0..255 (what image files hold); float means the generator's tanh range
  [-1, 1] (what the networks produce). Each image is resized to 299x299 with
  bilinear interpolation (``tf.image.resize``, no antialiasing) on the
  0..255 scale and then passed through
  ``keras.applications.inception_v3.preprocess_input`` (x / 127.5 - 1) into
  ``InceptionV3(include_top=False, pooling='avg')``, which gives the 2048-d
  pool features. ``progress(done, total)`` is called after every batch.

  ``weights='imagenet'``: the standard Keras no-top file
  ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``, taken from
  the Keras cache (``$KERAS_HOME/models`` or ``~/.keras/models``) or
  downloaded into it. If it is not cached and cannot be downloaded (no
  internet) an :class:`InceptionWeightsError` says so, names the cache path
  and points at ``--inception_weights PATH``.
  ``weights=PATH``: a local ``.h5`` (Keras' legacy format, e.g. the file
  above) or ``.weights.h5`` file; a missing path, or a file that does not
  load into the network, -> InceptionWeightsError naming the path.
  ``weights=None``: random weights drawn from ``numpy.random.default_rng(seed)``
  (He-uniform kernels): deterministic, needs no download, meaningless
  as a metric -- for tests and smoke runs only. No global random state is
  touched.

  Note: the original FID/KID code (TTUR, Binkowski et al.) uses the 2015
  TF "pool_3" Inception graph, whose weights differ from the Keras
  ``InceptionV3`` ImageNet weights; absolute numbers are therefore close to,
  but not exactly comparable with, published ones.

Typical use (paper protocol: translated test images of domain A vs. the real
test images of domain B)::

    ex = InceptionFeatureExtractor(weights=args.inception_weights or 'imagenet')
    res = kid_fid_between_folders(out_dir / 'testA2B', data_dir / 'testB', ex)
    print(format_kid(res['kid'], res['kid_std']))     # KIDx100 = .. +- ..
    write_json_atomic(out_dir / 'metrics.json', res)

Distribution metrics on features (float64 throughout)::

    kid(features_real, features_fake, n_subsets=100, subset_size=1000,
        seed=0) -> (mean, std)                     # multiply by 100 to report
    kid_subset_values(...same args...) -> np.ndarray (n_subsets,)
    polynomial_kernel(x, y, degree=3, coef0=1.0) -> (x @ y.T / d + coef0)**3
    mmd2_unbiased(x, y) -> float                   # one unbiased MMD^2
    fid(features_real, features_fake, eps=1e-6, method='sqrtm') -> float
    feature_statistics(features) -> (mu, sigma)        # mean, ddof=1 cov
    frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, method='sqrtm')
        # 'sqrtm': scipy.linalg.sqrtm with the eps*I retry (TTUR recipe;
        #   tens of seconds at D=2048 on a 2-core CPU);
        # 'eigh': same value via symmetric eigendecompositions, usually
        #   several times faster (for monitoring during training).
    format_kid(mean, std) -> 'KIDx100 = 11.61 +- 0.57'

  KID follows ``polynomial_mmd_averages`` of Binkowski et al. (the
  GAN-metrics / TTUR style): for each of ``n_subsets`` subsets, draw
  ``m = min(subset_size, n_real, n_fake)`` fake rows and then ``m`` real rows
  without replacement (``rng = numpy.random.default_rng(seed)``; per subset
  ``rng.choice(n_fake, m, replace=False)`` then ``rng.choice(n_real, m,
  replace=False)``), compute the unbiased MMD^2 with the cubic polynomial
  kernel k(x, y) = (x.y / d + 1)^3, and return the mean and the (population,
  ddof=0) standard deviation of the subset values.

Paired metrics (images of equal shape, uint8 RGB by default)::

    l1(pred, truth) -> float     # mean |pred - truth| in 0..255 units
    psnr(pred, truth, data_range=255.0) -> float   # dB; inf if identical
    ssim(pred, truth, data_range=255.0, sigma=1.5, K1=0.01, K2=0.03) -> float
    paired_scores(pairs) -> {'n', 'l1', 'psnr', 'ssim'}   # means over pairs

  SSIM is Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5,
  truncated at 3.5 sigma, reflected borders), population statistics, computed
  per channel and averaged, mean over the image minus a 5-pixel border --
  identical to ``skimage.metrics.structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1, data_range=255)``.

Folders and reports::

    list_images(folder) -> [Path]                 # sorted, image suffixes only
    load_rgb(path, size=None) -> uint8 (H, W, 3)  # size = (width, height)
    kid_fid_between_folders(fake_dir, real_dir, extractor, n_subsets=100,
        subset_size=1000, seed=0, compute_fid=True, progress=None,
        fid_method='sqrtm') -> dict
        keys: kid, kid_std, kid_x100, kid_x100_std, fid (None if not
        computed), n_fake, n_real, n_subsets, subset_size (effective m), seed,
        fake_dir, real_dir, weights; progress(stage, done, total) with stage
        'fake' or 'real'.
    paired_score_folders(translated_dir, truth_dir, inputs_dir) -> dict
        keys: n, model {l1, psnr, ssim}, identity {l1, psnr, ssim},
        translated_dir, truth_dir, inputs_dir, per_image [{name, model,
        identity}], ignored_translated, ignored_inputs.
        Files are matched on the stem (extensions may differ), driven by the
        truth folder: every truth image needs a translated and an input image
        with the same stem, otherwise FileNotFoundError listing the missing
        names. Translated and input images are resized (PIL bicubic) to the
        truth's size when they differ. "model" scores the translation against
        the truth; "identity" scores the untranslated input against the truth
        (the do-nothing baseline).
    write_json_atomic(path, obj)   # temp file in the same folder + os.replace;
        numpy scalars/arrays and Paths are converted; non-finite floats
        (e.g. PSNR of identical images) are written as null.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np
from scipy import linalg, ndimage

__all__ = [
    "FEATURE_DIM",
    "IMAGE_EXTENSIONS",
    "INCEPTION_INPUT_SIZE",
    "INCEPTION_NOTOP_FILENAME",
    "InceptionFeatureExtractor",
    "InceptionWeightsError",
    "feature_statistics",
    "fid",
    "format_kid",
    "frechet_distance",
    "imagenet_weights_cache_path",
    "keras_cache_dir",
    "kid",
    "kid_fid_between_folders",
    "kid_subset_values",
    "l1",
    "list_images",
    "load_rgb",
    "mmd2_unbiased",
    "paired_score_folders",
    "paired_scores",
    "polynomial_kernel",
    "psnr",
    "resolve_inception_weights",
    "ssim",
    "write_json_atomic",
]

FEATURE_DIM = 2048
INCEPTION_INPUT_SIZE = 299
INCEPTION_NOTOP_FILENAME = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/"
    "inception_v3/" + INCEPTION_NOTOP_FILENAME
)
INCEPTION_NOTOP_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

Progress = Optional[Callable[[int, int], None]]


# ---------------------------------------------------------------------------
# Inception weights
# ---------------------------------------------------------------------------


class InceptionWeightsError(RuntimeError):
    """The InceptionV3 weights could not be found, downloaded or loaded."""


def keras_cache_dir() -> str:
    """Keras' cache root, resolved now: ``$KERAS_HOME`` or ``~/.keras``.

    (Keras itself reads KERAS_HOME once, at import; this reads it at call
    time so that the environment of the calling process decides.) Like Keras,
    falls back to ``/tmp/.keras`` when the home folder is not writable.
    """
    env = os.environ.get("KERAS_HOME")
    if env:
        return os.path.expanduser(env)
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def imagenet_weights_cache_path() -> str:
    """Where Keras keeps the no-top InceptionV3 ImageNet weights."""
    return os.path.join(keras_cache_dir(), "models", INCEPTION_NOTOP_FILENAME)


def _download_imagenet_weights(cache_dir: str) -> str:
    """Return the cached weights file, downloading it if needed (Keras)."""
    from keras.utils import get_file

    return get_file(
        INCEPTION_NOTOP_FILENAME,
        INCEPTION_NOTOP_URL,
        cache_subdir="models",
        file_hash=INCEPTION_NOTOP_MD5,
        cache_dir=cache_dir,
    )


def resolve_inception_weights(weights) -> Optional[str]:
    """Map ``'imagenet'`` / ``None`` / PATH to a local weights file or None.

    Raises InceptionWeightsError when the file is missing or, for
    'imagenet', neither cached nor downloadable.
    """
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)) and str(weights) == "imagenet":
        cache_dir = keras_cache_dir()
        cache_path = os.path.join(cache_dir, "models", INCEPTION_NOTOP_FILENAME)
        try:
            path = _download_imagenet_weights(cache_dir)
        except Exception as err:  # noqa: BLE001 - any fetch / hash failure
            raise InceptionWeightsError(
                "The ImageNet InceptionV3 weights could not be found or "
                f"downloaded: '{cache_path}' is not in the Keras cache "
                f"({cache_dir}; set KERAS_HOME to use another one) and the "
                f"download from {INCEPTION_NOTOP_URL} failed "
                f"({type(err).__name__}: {err}). Without internet access, "
                "copy the standard file "
                f"'{INCEPTION_NOTOP_FILENAME}' to '{cache_path}', or pass it "
                "with `--inception_weights PATH`, which takes a local "
                "`.h5` / `.weights.h5` file."
            ) from err
        if not os.path.isfile(path):
            raise InceptionWeightsError(
                "The ImageNet InceptionV3 weights could not be found or "
                f"downloaded: Keras returned '{path}', which does not exist. "
                f"Put '{INCEPTION_NOTOP_FILENAME}' at '{cache_path}' or pass "
                "it with `--inception_weights PATH` (a local `.h5` / "
                "`.weights.h5` file)."
            )
        return path
    path = os.path.expanduser(os.fspath(weights))
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise InceptionWeightsError(
            f"Inception weights file '{path}' {what}. `--inception_weights "
            "PATH` takes a local `.h5` / `.weights.h5` file (the standard "
            f"'{INCEPTION_NOTOP_FILENAME}'), or use 'imagenet' for the Keras "
            "cache / download."
        )
    return path


# ---------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------


def _as_image_list(images) -> Tuple[list, bool]:
    """Split ``images`` into a list of (H, W, C) arrays; say whether the
    input was one (H, W, C) image given on its own."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3 and images.shape[-1] in (1, 3):
            return [images], True
        if images.ndim == 4:
            return list(images), False
        raise ValueError(
            "expected images of shape (N, H, W, 3), (N, H, W, 1) or "
            f"(H, W, 3); got {images.shape}"
        )
    return [np.asarray(im) for im in images], False


def _to_rgb_hwc(im: np.ndarray) -> np.ndarray:
    if im.ndim == 2:
        im = im[..., None]
    if im.ndim != 3 or im.shape[-1] not in (1, 3):
        raise ValueError(f"expected an (H, W, 3) or (H, W, 1) image; got {im.shape}")
    if im.shape[-1] == 1:
        im = np.repeat(im, 3, axis=-1)
    return im


class InceptionFeatureExtractor:
    """2048-d InceptionV3 pool features, computed in batches.

    See the module docstring for the input conventions.
    """

    feature_dim = FEATURE_DIM
    input_size = INCEPTION_INPUT_SIZE

    def __init__(self, weights="imagenet", batch_size: int = 32, seed: int = 0):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.weights = None if weights is None else str(weights)
        # Resolve first: a missing file fails fast, before TF builds anything.
        self.weights_path = resolve_inception_weights(weights)
        self.model = self._build_model()
        self._fn = None

    # -- model -------------------------------------------------------------
    def _build_model(self):
        import keras

        model = keras.applications.InceptionV3(
            include_top=False,
            weights=None,
            pooling="avg",
            input_shape=(self.input_size, self.input_size, 3),
        )
        if self.weights_path is None:
            self._randomise(model)
        else:
            try:
                model.load_weights(self.weights_path)
            except Exception as err:  # noqa: BLE001
                raise InceptionWeightsError(
                    f"Could not load Inception weights from "
                    f"'{self.weights_path}' ({type(err).__name__}: {err}). "
                    "Expected the Keras InceptionV3 no-top weights as a "
                    f"`.h5` / `.weights.h5` file (e.g. '{INCEPTION_NOTOP_FILENAME}')."
                ) from err
        return model

    def _randomise(self, model) -> None:
        """Deterministic He-uniform kernels from a local numpy RNG (keeps the
        activation scale roughly constant through the ReLUs, so the random
        features are not vanishingly small).

        InceptionV3's convolutions have no bias and its batch norms start
        at beta=0, mean=0, var=1 (constant initialisers), so the kernels are
        the only random part.
        """
        rng = np.random.default_rng(self.seed)
        for var in model.weights:
            name = var.path if hasattr(var, "path") else var.name
            if not name.endswith("kernel"):
                continue
            shape = tuple(var.shape)
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in = shape[-2] * receptive
            limit = math.sqrt(6.0 / fan_in)
            var.assign(rng.uniform(-limit, limit, size=shape).astype(np.float32))

    def _features_fn(self):
        if self._fn is None:
            import keras
            import tensorflow as tf

            model = self.model
            size = self.input_size
            preprocess = keras.applications.inception_v3.preprocess_input

            @tf.function(
                input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
                reduce_retracing=True,
            )
            def fn(x_0_255):
                x = tf.image.resize(x_0_255, (size, size), method="bilinear")
                x = preprocess(x)
                return model(x, training=False)

            self._fn = fn
        return self._fn

    # -- public ------------------------------------------------------------
    def from_uint8(self, images, progress: Progress = None) -> np.ndarray:
        """Features of uint8 images with values 0..255."""
        ims, _ = _as_image_list(images)
        for im in ims:
            if im.dtype != np.uint8:
                raise TypeError(f"from_uint8 expects uint8 images; got {im.dtype}")
        return self._run(ims, lambda im: im.astype(np.float32), progress)

    def from_minus1_1(self, images, progress: Progress = None) -> np.ndarray:
        """Features of float images in [-1, 1] (the generator's tanh range)."""
        ims, _ = _as_image_list(images)
        for im in ims:
            if not np.issubdtype(im.dtype, np.floating):
                raise TypeError(f"from_minus1_1 expects float images; got {im.dtype}")
            if im.size and (np.nanmin(im) < -1.0 - 1e-3 or np.nanmax(im) > 1.0 + 1e-3):
                raise ValueError(
                    "from_minus1_1 expects values in [-1, 1]; got range "
                    f"[{float(np.nanmin(im)):.4g}, {float(np.nanmax(im)):.4g}] "
                    "(0..255 data should be passed as uint8 to from_uint8)"
                )
        return self._run(
            ims, lambda im: ((im.astype(np.float32) + 1.0) * 127.5), progress
        )

    def __call__(self, images, progress: Progress = None) -> np.ndarray:
        ims, _ = _as_image_list(images)
        if ims and all(im.dtype == np.uint8 for im in ims):
            return self.from_uint8(ims, progress)
        if ims and all(np.issubdtype(im.dtype, np.floating) for im in ims):
            return self.from_minus1_1(ims, progress)
        if not ims:
            return np.zeros((0, self.feature_dim), np.float64)
        raise TypeError("images must be all uint8 (0..255) or all float ([-1, 1])")

    def from_files(self, paths: Sequence, progress: Progress = None) -> np.ndarray:
        """Features of image files (read with PIL, converted to RGB), loading
        one batch at a time."""
        paths = list(paths)
        return self._run(paths, lambda p: load_rgb(p).astype(np.float32), progress)

    def from_folder(self, folder, progress: Progress = None) -> np.ndarray:
        paths = list_images(folder)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in '{folder}'")
        return self.from_files(paths, progress)

    def _run(self, items: list, to_float_0_255, progress: Progress) -> np.ndarray:
        import tensorflow as tf

        total = len(items)
        out = np.zeros((total, self.feature_dim), np.float64)
        if total == 0:
            return out
        fn = self._features_fn()
        size = self.input_size
        for start in range(0, total, self.batch_size):
            chunk = [_to_rgb_hwc(to_float_0_255(it)) for it in items[start : start + self.batch_size]]
            if len({im.shape for im in chunk}) > 1:
                # Mixed sizes: resize each on its own (same bilinear op).
                chunk = [
                    tf.image.resize(im[None], (size, size), method="bilinear")[0].numpy()
                    for im in chunk
                ]
            batch = np.stack(chunk).astype(np.float32)
            feats = fn(tf.constant(batch)).numpy()
            out[start : start + len(chunk)] = feats
            if progress is not None:
                progress(start + len(chunk), total)
        return out


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


def fid(features_real, features_fake, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """Frechet Inception Distance between two (N, D) feature sets."""
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


# ---------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------


def list_images(folder) -> list:
    """Image files directly in ``folder`` (no recursion, no hidden files),
    sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder '{folder}' does not exist")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def load_rgb(path, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Read an image with PIL as uint8 RGB (H, W, 3); optionally resize it
    (bicubic) to ``size = (width, height)``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != tuple(size):
            im = im.resize(tuple(size), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8).copy()


def kid_fid_between_folders(
    fake_dir,
    real_dir,
    extractor: InceptionFeatureExtractor,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    compute_fid: bool = True,
    progress: Optional[Callable[[str, int, int], None]] = None,
    fid_method: str = "sqrtm",
) -> dict:
    """KID (and FID) between the images of two folders; see module docstring."""
    fake_paths = list_images(fake_dir)
    real_paths = list_images(real_dir)
    for name, d, paths in (("fake", fake_dir, fake_paths), ("real", real_dir, real_paths)):
        if len(paths) < 2:
            raise ValueError(f"KID/FID need at least 2 {name} images; '{d}' has {len(paths)}")

    def stage(label):
        return None if progress is None else (lambda done, total: progress(label, done, total))

    f_fake = extractor.from_files(fake_paths, stage("fake"))
    f_real = extractor.from_files(real_paths, stage("real"))
    mean, std = kid(f_real, f_fake, n_subsets=n_subsets, subset_size=subset_size, seed=seed)
    return {
        "kid": mean,
        "kid_std": std,
        "kid_x100": 100.0 * mean,
        "kid_x100_std": 100.0 * std,
        "fid": fid(f_real, f_fake, method=fid_method) if compute_fid else None,
        "n_fake": len(fake_paths),
        "n_real": len(real_paths),
        "n_subsets": int(n_subsets),
        "subset_size": min(int(subset_size), len(fake_paths), len(real_paths)),
        "seed": int(seed),
        "fake_dir": str(fake_dir),
        "real_dir": str(real_dir),
        "weights": getattr(extractor, "weights", None),
    }


def _by_stem(folder) -> dict:
    table: dict = {}
    for p in list_images(folder):
        table.setdefault(p.stem, []).append(p)
    dupes = {s: ps for s, ps in table.items() if len(ps) > 1}
    if dupes:
        listing = "; ".join(", ".join(p.name for p in ps) for ps in dupes.values())
        raise ValueError(f"ambiguous file names in '{folder}' (same stem): {listing}")
    return {s: ps[0] for s, ps in table.items()}


def paired_score_folders(translated_dir, truth_dir, inputs_dir) -> dict:
    """L1 / PSNR / SSIM of translations and of the identity baseline against
    the ground truth, matched on file stems; see module docstring."""
    truth = _by_stem(truth_dir)
    if not truth:
        raise FileNotFoundError(f"no ground-truth images in '{truth_dir}'")
    translated = _by_stem(translated_dir)
    inputs = _by_stem(inputs_dir)
    missing = []
    for stem in sorted(truth):
        for label, table, d in (("translated", translated, translated_dir), ("input", inputs, inputs_dir)):
            if stem not in table:
                missing.append(f"{label} image for '{truth[stem].name}' (stem '{stem}') not in '{d}'")
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} missing match(es) for ground truth in '{truth_dir}': " + "; ".join(missing)
        )

    per_image = []
    sums = {"model": np.zeros(3), "identity": np.zeros(3)}
    for stem in sorted(truth):
        gt = load_rgb(truth[stem])
        size = (gt.shape[1], gt.shape[0])
        entry = {"name": stem}
        for label, path in (("model", translated[stem]), ("identity", inputs[stem])):
            im = load_rgb(path, size=size)
            scores = {"l1": l1(im, gt), "psnr": psnr(im, gt), "ssim": ssim(im, gt)}
            entry[label] = scores
            sums[label] += [scores["l1"], scores["psnr"], scores["ssim"]]
        per_image.append(entry)
    n = len(per_image)
    return {
        "n": n,
        "model": dict(zip(("l1", "psnr", "ssim"), (float(v) for v in sums["model"] / n))),
        "identity": dict(zip(("l1", "psnr", "ssim"), (float(v) for v in sums["identity"] / n))),
        "translated_dir": str(translated_dir),
        "truth_dir": str(truth_dir),
        "inputs_dir": str(inputs_dir),
        "per_image": per_image,
        "ignored_translated": sorted(translated[s].name for s in set(translated) - set(truth)),
        "ignored_inputs": sorted(inputs[s].name for s in set(inputs) - set(truth)),
    }


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path, obj, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temp file in the same
    folder, fsync, os.replace). Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(obj), indent=indent, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
