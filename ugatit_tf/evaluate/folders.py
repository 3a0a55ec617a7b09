"""Scores between folders of images (KID/FID of translated vs real images, paired scores
matched on file stems) and the JSON reports they go into; see docs/metrics.md."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from ugatit_tf.common.files import PHOTO_EXTENSIONS, list_images, write_json_atomic
from ugatit_tf.common.images import load_rgb
from ugatit_tf.evaluate.inception import InceptionFeatureExtractor
from ugatit_tf.evaluate.metrics import fid, kid, l1, psnr, ssim

# ---------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------


def image_paths(folder) -> list:
    """Image files directly in ``folder`` (common.files.list_images with the photo
    extensions) as Paths; FileNotFoundError when the folder does not exist."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder '{folder}' does not exist")
    return [Path(p) for p in list_images(folder, PHOTO_EXTENSIONS)]


def load_resized(path, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """common.images.load_rgb, resized (PIL bicubic) to ``size = (width, height)`` if given
    and different."""
    from PIL import Image

    rgb = load_rgb(path)
    if size is None or (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(tuple(size), Image.BICUBIC), dtype=np.uint8)


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
    fake_paths = image_paths(fake_dir)
    real_paths = image_paths(real_dir)
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
    for p in image_paths(folder):
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
        gt = load_resized(truth[stem])
        size = (gt.shape[1], gt.shape[0])
        entry = {"name": stem}
        for label, path in (("model", translated[stem]), ("identity", inputs[stem])):
            im = load_resized(path, size=size)
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


def write_report(path, obj, indent: int = 2) -> str:
    """Write ``obj`` as JSON at ``path`` atomically (common.files.write_json_atomic, keys in
    their order); numpy scalars/arrays and Paths are converted, non-finite floats (the PSNR
    of identical images) written as null."""
    return write_json_atomic(path, _jsonable(obj), indent=indent, sort_keys=False)
