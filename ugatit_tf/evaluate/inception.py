"""Inception features for KID and FID: Keras InceptionV3 (no top, average pool, 2048-d) on
images resized to 299 x 299, with the ImageNet weights from the Keras cache or a local file, or
deterministic random weights for tests (weights=None). TensorFlow is imported lazily. The API
and its conventions are in docs/metrics.md."""

from __future__ import annotations

import math
import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from ugatit_tf.common.files import PHOTO_EXTENSIONS, list_images
from ugatit_tf.common.images import load_rgb

FEATURE_DIM = 2048
INCEPTION_INPUT_SIZE = 299
INCEPTION_NOTOP_FILENAME = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/"
    "inception_v3/" + INCEPTION_NOTOP_FILENAME
)
INCEPTION_NOTOP_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"

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
        """Features of image files (common.images.load_rgb), loading one batch at a time."""
        paths = list(paths)
        return self._run(paths, lambda p: load_rgb(p).astype(np.float32), progress)

    def from_folder(self, folder, progress: Progress = None) -> np.ndarray:
        paths = list_images(folder, PHOTO_EXTENSIONS) if os.path.isdir(folder) else []
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(PHOTO_EXTENSIONS)}) in '{folder}'")
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
