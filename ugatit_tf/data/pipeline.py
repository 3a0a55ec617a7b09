"""Data: the original's folder layout, a tf.data training pipeline and test-image loading.

    dataset_dir/NAME/trainA, trainB, testA, testB

Training images are decoded to 3 channels, resized to img_size (bilinear, TF1's
align_corners=False / half_pixel_centers=False resize), scaled to [-1, 1] and augmented as in
the original: with probability 1/2, a random horizontal flip, a resize to img_size + 30
(256 px) or + 15 (other sizes) and a random crop back. The pipeline is deterministic for a
seed (stateless random ops seeded per element), and its iterator can be checkpointed.

Before training, `domain_files` scans the training folders (data.check.scan_folder): unusable
files (including images over the pixel budget, all frames counted from their headers) are left
out with one warning line each, files TensorFlow would mis-decode (alpha, 16-bit,
CMYK, EXIF-rotated, ...) are replaced by 8-bit RGB PNG copies written under
checkpoint_dir/model_dir/converted_inputs/ (never into the data set), and a folder without a
usable image fails before any model is built. If a file still fails to decode during the run
(deleted, replaced), the pipeline drops that element with a logged warning instead of stopping
the training.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile

import numpy as np
import tensorflow as tf

from ugatit_tf.common import files, images
from ugatit_tf.data.check import (CONVERT, IGNORE, SKIP, USE, DataError, convert_to_png,
                                  require_demo_dataset, scan_folder)

CONVERTED_DIR = "converted_inputs"


class OutputError(DataError):
    """An output folder (results, samples, logs) cannot be written; the message names the
    folder and the flag."""


def ensure_output_folder(path: str, flag: str) -> str:
    """Create `path` if needed and check that a file can be written there (a temporary probe,
    removed at once). Raises OutputError naming the folder and `flag`."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write to {path} ({e.strerror or e}): check {flag} (it must be "
                          f"a writable folder)") from e
    return path


@contextlib.contextmanager
def output_folder(path: str, flag: str):
    """ensure_output_folder for a block that may still fail before anything is written
    (a checkpoint that cannot be restored): if it raises, the folders this created are
    removed again (deepest first, only while empty), so a failed run leaves nothing behind."""
    created, parent = [], os.path.abspath(path)
    while not os.path.exists(parent) and parent != os.path.dirname(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    ensure_output_folder(path, flag)
    try:
        yield path
    except BaseException:
        for folder in created:
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise


def list_images(folder: str) -> list[str]:
    """Sorted image files of a data folder (common.files.list_images); DataError naming the
    folder when it is missing or has none."""
    if not os.path.isdir(folder):
        raise DataError(f"data folder {folder} does not exist")
    found = files.list_images(folder)
    if not found:
        raise DataError(f"data folder {folder} has no images "
                        f"({', '.join(e[1:] for e in files.IMAGE_EXTENSIONS)})")
    return found


def dataset_folder(config) -> str:
    return os.path.join(config.dataset_dir, config.dataset)


def domain_files(config, domains=("trainA", "trainB"), log=print) -> dict[str, list[str]]:
    """The image files of each domain; fails naming the folder before any model is built.
    A missing demo data set is a DataError naming tools/make_demo_dataset.py. Training
    domains (trainA, trainB) are scanned and prepared with `prepare_training_files`: what comes
    back is safe to feed to `train_dataset`."""
    root = dataset_folder(config)
    require_demo_dataset(config)
    if not os.path.isdir(root):
        raise DataError(f"data set folder {root} does not exist: expected "
                        f"{root}/trainA, trainB, testA, testB (see --dataset, --dataset_dir)")
    found = {d: list_images(os.path.join(root, d)) for d in domains}
    for d in domains:
        if d.startswith("train"):
            found[d] = prepare_training_files(config, d, log=log)
    return found


def converted_folder(config, domain: str) -> str:
    """Where the converted copies of a training domain go: under the model's checkpoint
    folder, never inside the data set."""
    from ugatit_tf.model.checkpoints import model_checkpoint_dir
    return os.path.join(model_checkpoint_dir(config), CONVERTED_DIR, domain)


def _converted_name(path: str) -> str:
    """Name of the PNG copy of `path`: changes whenever the original changes (size, mtime)."""
    st = os.stat(path)
    key = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}-{hashlib.sha1(key).hexdigest()[:12]}.png"


def _convert_files(reports, out_dir: str, domain: str, log) -> tuple[dict[str, str], list]:
    """Make (or reuse) the PNG copies of `reports` in `out_dir`: {original: copy}, and the
    reports whose conversion failed (each logged)."""
    from PIL import Image

    converted, failed = {}, []
    if not reports:
        return converted, failed
    ensure_output_folder(out_dir, "--checkpoint_dir")
    for r in reports:
        try:  # the name reads the file's size and time: it may have gone since the scan
            dst = os.path.join(out_dir, _converted_name(r.path))
            if not os.path.exists(dst):
                convert_to_png(r.path, dst)
        except (OSError, ValueError, SyntaxError, EOFError,
                Image.DecompressionBombError) as e:  # changed since the scan
            log(f" [!] skipped {domain}/{r.name}: cannot convert it ({e})")
            failed.append(r)
            continue
        converted[r.path] = dst
    return converted, failed


def _remove_stale_copies(out_dir: str, converted: dict[str, str]) -> None:
    """Delete the PNG copies in `out_dir` that are not among `converted`."""
    if os.path.isdir(out_dir):  # copies of files that changed or went away
        keep = {os.path.basename(p) for p in converted.values()}
        for name in os.listdir(out_dir):
            if name.endswith(".png") and name not in keep:
                try:
                    os.unlink(os.path.join(out_dir, name))
                except OSError:
                    pass


def _summary_line(domain: str, candidates, usable: list[str], skipped: list,
                  converted: dict[str, str], out_dir: str) -> str | None:
    """The warning line that sums up a training folder; None when every file is clean."""
    warned = sum(1 for r in candidates if r.action == USE and r.problems)
    if not (skipped or converted or warned):
        return None
    parts = [f"{len(usable)} of {len(candidates)} images usable"]
    if skipped:
        parts.append(f"{len(skipped)} skipped")
    if converted:
        parts.append(f"{len(converted)} converted to 8-bit RGB PNG in {out_dir}")
    if warned:
        parts.append(f"{warned} with warnings (grayscale, tiny or animated; see --phase "
                     f"check)")
    return f" [!] {domain}: " + ", ".join(parts)


def prepare_training_files(config, domain: str, log=print) -> list[str]:
    """Scan one training folder and return the paths to train on, in the folder's sorted
    order: the usable originals, and for the files TensorFlow would mis-decode their 8-bit RGB
    PNG copies (made once, reused while the original is unchanged). Prints one warning line
    per skipped file and one summary line; raises DataError naming the folder when nothing is
    usable."""
    folder = os.path.join(dataset_folder(config), domain)
    reports = scan_folder(folder, config.img_size)
    candidates = [r for r in reports if r.action != IGNORE]
    skipped = [r for r in candidates if r.action == SKIP]
    for r in skipped:
        log(f" [!] skipped {domain}/{r.line()}")
    to_convert = [r for r in candidates if r.action == CONVERT]
    out_dir = converted_folder(config, domain)
    converted, failed = _convert_files(to_convert, out_dir, domain, log)
    skipped += failed
    _remove_stale_copies(out_dir, converted)
    usable = [converted.get(r.path, r.path) for r in candidates
              if r.action == USE or r.path in converted]
    if not usable:
        raise DataError(f"data folder {folder} has no usable images: all {len(candidates)} "
                        f"image files are unusable (run python main.py --phase check "
                        f"--dataset {config.dataset} --dataset_dir {config.dataset_dir} "
                        f"for the list)")
    summary = _summary_line(domain, candidates, usable, skipped, converted, out_dir)
    if summary:
        log(summary)
    return usable


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
    # last line of defence: a file that became unreadable during the run (deleted, replaced)
    # is dropped with a warning in the log instead of ending the training. Without errors the
    # stream (and so determinism and exact resume) is unchanged.
    ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(config.batch_size, drop_remainder=True)
    return ds.prefetch(2)


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning off: maps declared AUTOTUNE run on as many threads as
    the machine has cores, and the iterator starts no tuning thread. Deleting an iterator
    joins that thread, which in full test-suite runs waited 30-155 s several times per run
    (docs/training.md, Data); a pipeline that decodes one image per step has nothing to tune.
    The elements, their order and the iterator's checkpoints are the same (an iterator saved
    without this option restores into one with it)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


# ---------------------------------------------------------------------------
# Test-time images (numpy; the original's load_test_data uses OpenCV)
# ---------------------------------------------------------------------------

def load_rgb(path: str) -> np.ndarray:
    """A test image: common.images.load_rgb (the training copies' conversion, refused over the
    pixel budget before decoding), its refusals raised as DataError naming the file."""
    try:
        return images.load_rgb(path)
    except images.ImageRejected as e:
        raise DataError(f"cannot read image {e}") from e


def to_model_input(rgb: np.ndarray, img_size: int) -> np.ndarray:
    """The original's load_test_data: cv2.resize (bilinear) to img_size, / 127.5 - 1."""
    import cv2
    img = cv2.resize(rgb, dsize=(img_size, img_size), interpolation=cv2.INTER_LINEAR)
    return img.astype(np.float32) / 127.5 - 1.0

