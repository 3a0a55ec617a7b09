"""Data: the original's folder layout, a tf.data training pipeline and test-image loading.

    dataset_dir/NAME/trainA, trainB, testA, testB

Training images are decoded to 3 channels, resized to img_size (bilinear, TF1's
align_corners=False / half_pixel_centers=False resize), scaled to [-1, 1] and augmented as in
the original: with probability 1/2, a random horizontal flip, a resize to img_size + 30
(256 px) or + 15 (other sizes) and a random crop back. The pipeline is deterministic for a
seed (stateless random ops seeded per element), and its iterator can be checkpointed.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DOMAINS = ("trainA", "trainB", "testA", "testB")


class DataError(ValueError):
    """A data folder is missing, empty or unusable; the message names it."""


def list_images(folder: str) -> list[str]:
    """Sorted image files of a folder (non-recursive, hidden files skipped)."""
    if not os.path.isdir(folder):
        raise DataError(f"data folder {folder} does not exist")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
                   and os.path.isfile(os.path.join(folder, f)))
    if not files:
        raise DataError(f"data folder {folder} has no images "
                        f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    return files


def dataset_folder(config) -> str:
    return os.path.join(config.dataset_dir, config.dataset)


def domain_files(config, domains=("trainA", "trainB")) -> dict[str, list[str]]:
    """The image files of each domain; fails naming the folder before any model is built.
    The demo data set is generated on first use."""
    root = dataset_folder(config)
    if config.dataset == "demo" and not os.path.isdir(os.path.join(root, domains[0])):
        from .demo_data import ensure_demo_dataset
        ensure_demo_dataset(config.dataset_dir, "demo")
    if not os.path.isdir(root):
        raise DataError(f"data set folder {root} does not exist: expected "
                        f"{root}/trainA, trainB, testA, testB (see --dataset, --dataset_dir)")
    return {d: list_images(os.path.join(root, d)) for d in domains}


def augment_size(img_size: int) -> int:
    return img_size + (30 if img_size == 256 else 15)


def _resize_tf1(image, size):
    """TF1's tf.image.resize_images (bilinear, align_corners=False, no half-pixel centres)."""
    return tf.compat.v1.image.resize_bilinear(image[None], [size, size],
                                              half_pixel_centers=False)[0]


def decode(path):
    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def preprocess(image_uint8, img_size: int, augment: bool, seed):
    """uint8 HxWx3 -> float32 [-1, 1] img_size x img_size (+ the original's augmentation).
    `seed` is a stateless seed [2] (int64)."""
    img = _resize_tf1(tf.cast(image_uint8, tf.float32), img_size)
    img = img / 127.5 - 1.0
    if augment:
        seeds = tf.random.experimental.stateless_split(seed, 4)
        p = tf.random.stateless_uniform([], seed=seeds[0])

        def augmented():
            x = tf.image.stateless_random_flip_left_right(img, seed=seeds[1])
            x = _resize_tf1(x, augment_size(img_size))
            return tf.image.stateless_random_crop(x, [img_size, img_size, 3], seed=seeds[2])

        img = tf.cond(p > 0.5, augmented, lambda: img)
    return img


def train_dataset(files: list[str], config, seed: int) -> tf.data.Dataset:
    """Shuffled, repeated, augmented, batched, prefetched training images of one domain."""
    n = len(files)
    paths = tf.data.Dataset.from_tensor_slices(tf.constant(files))
    ds = paths.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()

    def load(index, path):
        element_seed = tf.stack([tf.constant(seed, tf.int64), index])
        return preprocess(decode(path), config.img_size, config.augment_flag, element_seed)

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(config.batch_size, drop_remainder=True)
    return ds.prefetch(2)


# ---------------------------------------------------------------------------
# Test-time images (numpy; the original's load_test_data uses OpenCV)
# ---------------------------------------------------------------------------

def load_rgb(path: str) -> np.ndarray:
    """Any supported image file -> uint8 RGB (EXIF orientation applied, first GIF frame,
    grayscale / alpha / 16-bit converted). Raises DataError naming the file."""
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / max(arr.max(), 1.0) * 255.0, 0, 255).astype(np.uint8)
                return np.stack([arr] * 3, axis=-1)
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def to_model_input(rgb: np.ndarray, img_size: int) -> np.ndarray:
    """The original's load_test_data: cv2.resize (bilinear) to img_size, / 127.5 - 1."""
    import cv2
    img = cv2.resize(rgb, dsize=(img_size, img_size), interpolation=cv2.INTER_LINEAR)
    return img.astype(np.float32) / 127.5 - 1.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """The original's inverse transform and save: ((x + 1) / 2) * 255, truncated to uint8."""
    return np.clip((np.asarray(image, np.float64) + 1.0) / 2.0 * 255.0, 0, 255).astype(np.uint8)
