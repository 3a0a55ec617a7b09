"""The eval phase and the evaluation during training: KID / FID of the translations against
the target domain's test images (the paper's protocol), with the untranslated images as a
baseline, and a paired L1 / PSNR / SSIM score on data sets with ground truth (the demo set);
the report is written to result_dir/model_dir/eval.json. What is measured, how, and the
report's layout: docs/metrics.md.
"""

from __future__ import annotations

import datetime
import os
import re
import time

import numpy as np

from ugatit_tf.common.images import to_uint8
from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.evaluate import metrics as ev
from ugatit_tf.evaluate.folders import write_report
from ugatit_tf.evaluate.inception import FEATURE_DIM, InceptionFeatureExtractor
from ugatit_tf.evaluate.plots import write_eval_chart

RANDOM_WEIGHTS = ("random", "none")  # --inception_weights values meaning weights=None
KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
KID_SEED = 0
TRANSLATE_BATCH = 16
INCEPTION_BATCH = 32
EVAL_FILE = "eval.json"

# direction -> (source test folder, target test folder, ground-truth folder)
DIRECTIONS = {"A2B": ("testA", "testB", "testA_paired"),
              "B2A": ("testB", "testA", "testB_paired")}
METRICS = ("l1", "psnr", "ssim")
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True}


def _quiet(*_args, **_kwargs):
    pass


# ---------------------------------------------------------------------------
# Inception
# ---------------------------------------------------------------------------

def inception_weights_arg(value):
    """The extractor's ``weights`` for a ``--inception_weights`` value: 'random' (or 'none',
    any case) -> None (random initialisation, tests only); anything else unchanged."""
    if value is None or str(value).strip().lower() in RANDOM_WEIGHTS:
        return None
    return value


def make_extractor(config) -> InceptionFeatureExtractor:
    """InceptionFeatureExtractor for config.inception_weights. Raises
    inception.InceptionWeightsError (one clear line) when the weights are unavailable."""
    return InceptionFeatureExtractor(weights=inception_weights_arg(config.inception_weights),
                                     batch_size=INCEPTION_BATCH, seed=0)


def make_eval_cache(config) -> dict:
    """A cache for evaluate_during_training with the Inception network already built, so that
    missing weights fail before training starts rather than at the first evaluation."""
    cache: dict = {}
    _extractor(cache, config)
    return cache


def _cache_key(config) -> tuple:
    return (os.path.abspath(config.dataset_dir), config.dataset, config.img_size,
            str(config.inception_weights))


def _prepare_cache(cache: dict, config) -> dict:
    key = _cache_key(config)
    if cache.get("key") != key:
        extractor = cache.get("extractor") if cache.get("weights") == str(
            config.inception_weights) else None
        cache.clear()
        cache["key"] = key
        if extractor is not None:
            cache["extractor"] = extractor
            cache["weights"] = str(config.inception_weights)
    return cache


def _extractor(cache: dict, config) -> InceptionFeatureExtractor:
    if cache.get("extractor") is None or cache.get("weights") != str(config.inception_weights):
        cache["extractor"] = make_extractor(config)
        cache["weights"] = str(config.inception_weights)
    return cache["extractor"]


# ---------------------------------------------------------------------------
# Test data, as the model sees it
# ---------------------------------------------------------------------------

def model_view(x: np.ndarray) -> np.ndarray:
    """A model input in [-1, 1] (``data.to_model_input``) back to the exact uint8 pixels the
    resize produced (to_model_input resizes uint8 with cv2, then scales)."""
    return np.clip(np.rint((np.asarray(x, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def load_test_data(config, log=print) -> dict:
    """Test images of both domains at img_size, and the paired ground truth if present.

    Returns {"testA": {"paths", "names", "inputs" float32 (N,S,S,3), "views" uint8},
             "testB": {...}, "paired": {"A2B": None | {"dir", "index", "names", "truth"},
             "B2A": ...}}. Unreadable test images are skipped with a message (as in the test
    phase); a ground-truth image without its input file is a DataError."""
    files = data_lib.domain_files(config, ("testA", "testB"))
    size = config.img_size
    out: dict = {}
    for domain in ("testA", "testB"):
        out[domain] = _load_domain(config, domain, files[domain], size, log)
    out["paired"] = {}
    root = data_lib.dataset_folder(config)
    for direction, (source, _target, truth_name) in DIRECTIONS.items():
        out["paired"][direction] = _load_pairs(os.path.join(root, truth_name),
                                               os.path.join(root, source), files[source],
                                               out[source]["names"], size)
    return out


def _load_domain(config, domain: str, files: list, size: int, log) -> dict:
    """The readable images of one test folder: paths, names, model inputs and their views."""
    paths, names, inputs = [], [], []
    for path in files:
        try:
            rgb = data_lib.load_rgb(path)
        except data_lib.DataError as e:
            log(f" [!] skipped: {e}")
            continue
        paths.append(path)
        names.append(_stem(path))
        inputs.append(data_lib.to_model_input(rgb, size))
    if len(inputs) < 2:
        raise data_lib.DataError(
            f"evaluation needs at least 2 readable images in "
            f"{os.path.join(data_lib.dataset_folder(config), domain)}; found {len(inputs)}")
    x = np.stack(inputs).astype(np.float32)
    return {"paths": paths, "names": names, "inputs": x, "views": model_view(x)}


def _load_pairs(truth_dir: str, source_dir: str, source_files: list, source_names: list,
                size: int) -> dict | None:
    """One direction's ground truth (None without its folder), aligned with the inputs."""
    if not os.path.isdir(truth_dir):
        return None
    truth_files = data_lib.list_images(truth_dir)
    _check_truth_has_inputs(truth_dir, truth_files, source_dir, source_files)
    position = {name: i for i, name in enumerate(source_names)}
    index, names, truth = [], [], []
    for p in truth_files:
        name = _stem(p)
        if name not in position:  # the input was unreadable (already reported)
            continue
        index.append(position[name])
        names.append(name)
        truth.append(model_view(data_lib.to_model_input(data_lib.load_rgb(p), size)))
    return {"dir": truth_dir, "index": np.asarray(index, np.int64),
            "names": names, "truth": np.stack(truth) if truth else None}


def _check_truth_has_inputs(truth_dir: str, truth_files: list, source_dir: str,
                            source_files: list) -> None:
    """DataError naming the ground-truth images that have no input file of the same name."""
    all_sources = {_stem(p) for p in source_files}
    missing = sorted(_stem(p) for p in truth_files if _stem(p) not in all_sources)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise data_lib.DataError(
            f"{len(missing)} ground-truth image(s) in {truth_dir} have no input with the "
            f"same name in {source_dir}: {shown}")


# ---------------------------------------------------------------------------
# Translation and scores
# ---------------------------------------------------------------------------

def _translators(nets, config) -> dict:
    from ugatit_tf.model.layers import choose_kernels, live_kernels
    from ugatit_tf.model.networks import translator

    # cached with the networks, whose weights change between evaluations during training:
    # on the variables, never "frozen"
    kernels = live_kernels(choose_kernels(config.kernels, batched=True))
    forward = {d: translator(g, kernels, config.img_size)
               for d, g in (("A2B", nets.genA2B), ("B2A", nets.genB2A))}
    return {d: (lambda x, f=f: f(x)[0]) for d, f in forward.items()}


def translate(fn, inputs: np.ndarray, batch_size: int = TRANSLATE_BATCH,
              progress=None) -> np.ndarray:
    """Run a generator over [-1, 1] inputs in batches; uint8 outputs truncated as the test
    phase saves them (common.images.to_uint8(x, "truncate"))."""
    import tensorflow as tf

    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        outputs.append(to_uint8(fn(tf.constant(batch)).numpy(), "truncate"))
        if progress is not None:
            progress(len(batch))
    return np.concatenate(outputs, axis=0)


def mean_image(images: np.ndarray) -> np.ndarray:
    """The pixel-wise mean of uint8 images, rounded to uint8."""
    return np.clip(np.rint(np.asarray(images, np.float64).mean(axis=0)), 0, 255).astype(np.uint8)


def _compare(label_images, gt) -> dict:
    return {label: {"l1": ev.l1(im, gt), "psnr": ev.psnr(im, gt), "ssim": ev.ssim(im, gt)}
            for label, im in label_images}


def _better(a: dict, b: dict) -> tuple[dict, dict]:
    """(improvement of a over b, positive = better; does a beat b) per metric."""
    improvement = {m: (a[m] - b[m]) if HIGHER_IS_BETTER[m] else (b[m] - a[m]) for m in METRICS}
    return improvement, {m: bool(improvement[m] > 0) for m in METRICS}


def paired_report(outputs: np.ndarray, inputs_view: np.ndarray, pairs: dict,
                  target_views: np.ndarray | None = None) -> dict:
    """L1 / PSNR / SSIM against the ground truth of: the translations ("model"), the
    untranslated inputs ("identity", the do-nothing baseline) and, with ``target_views``
    (the target domain's real test images), their mean image ("target_mean": the best
    input-independent guess, which already gets the target domain's colours right; a model
    that only learned colours does not beat it)."""
    labels = ["model", "identity"] + (["target_mean"] if target_views is not None else [])
    constant = mean_image(target_views) if target_views is not None else None
    per_image = []
    sums = {label: np.zeros(3) for label in labels}
    for k, (i, name) in enumerate(zip(pairs["index"], pairs["names"])):
        images = [("model", outputs[i]), ("identity", inputs_view[i])]
        if constant is not None:
            images.append(("target_mean", constant))
        entry = {"name": name, **_compare(images, pairs["truth"][k])}
        for label in labels:
            sums[label] += [entry[label][m] for m in METRICS]
        per_image.append(entry)
    n = len(per_image)
    means = {label: dict(zip(METRICS, (float(v) for v in sums[label] / n))) for label in labels}
    report = {"truth_dir": pairs["dir"], "n": n, "size": int(outputs.shape[1]), **means}
    report["improvement"], report["beats_identity"] = _better(means["model"], means["identity"])
    if constant is not None:
        report["improvement_over_target_mean"], report["beats_target_mean"] = _better(
            means["model"], means["target_mean"])
    report["per_image"] = per_image
    return report


def evaluate_networks(nets, config, cache: dict | None = None, log=None,
                      progress: bool = False) -> dict:
    """KID / FID (both directions) and the paired scores for in-memory networks.

    ``cache`` (a dict, kept by the caller between calls) holds the Inception extractor, the
    test images, the real-image features and the traced generator functions."""
    log = log or _quiet
    cache = _prepare_cache({} if cache is None else cache, config)
    t0 = time.monotonic()
    test, extractor, translators = _cached_inputs(nets, config, cache, log)
    real_features = cache.setdefault("real_features", {})
    bar = _progress_bar(test, real_features) if progress else None
    for domain in ("testA", "testB"):
        if domain not in real_features:
            real_features[domain] = extractor.from_uint8(test[domain]["views"],
                                                         _feature_progress(bar))
    directions = {d: _score_direction(d, translators[d], test, extractor, real_features,
                                      config, bar)
                  for d in DIRECTIONS}
    if bar is not None:
        bar.close()
    return _scores(config, test, extractor, directions, t0)


def _cached_inputs(nets, config, cache: dict, log) -> tuple:
    """(test data, Inception extractor, translators) from ``cache``, made when missing."""
    if "data" not in cache:
        cache["data"] = load_test_data(config, log)
    test = cache["data"]
    extractor = _extractor(cache, config)
    if cache.get("nets") is not nets:  # the object itself: an id can be reused
        cache["translators"] = _translators(nets, config)
        cache["nets"] = nets
    return test, extractor, cache["translators"]


def _progress_bar(test: dict, real_features: dict):
    """A progress bar over the images still to featurize: translations and new real ones."""
    from ugatit_tf.common.progress import ProgressBar
    total = sum(len(test[d]["inputs"]) + (0 if d in real_features else len(test[d]["views"]))
                for d in ("testA", "testB"))
    return ProgressBar(total, label="inception", enabled=True)


def _feature_progress(bar):
    """A from_uint8 progress callback (done, total) that advances ``bar`` (None: nothing)."""
    seen = [0]

    def cb(done, _total):
        if bar is not None:
            bar.update(done - seen[0])
        seen[0] = done
    return cb


def _kid(real: np.ndarray, fake: np.ndarray) -> tuple:
    """KID (mean, std) over the report's subsets and seed."""
    return ev.kid(real, fake, n_subsets=KID_SUBSETS, subset_size=KID_MAX_SUBSET, seed=KID_SEED)


def _score_direction(direction: str, fn, test: dict, extractor, real_features: dict, config,
                     bar) -> dict:
    """One direction's KID / FID, its do-nothing baseline's, and its paired score."""
    source, target, _truth = DIRECTIONS[direction]
    outputs = translate(fn, test[source]["inputs"])
    fake = extractor.from_uint8(outputs, _feature_progress(bar))
    real = real_features[target]
    kid_mean, kid_std = _kid(real, fake)
    m = min(KID_MAX_SUBSET, len(real), len(fake))
    # the do-nothing baseline: the untranslated source images vs the target domain
    source_features = real_features[source]
    id_mean, id_std = _kid(real, source_features)
    pairs = test["paired"].get(direction)
    return {
        "source": os.path.join(data_lib.dataset_folder(config), source),
        "target": os.path.join(data_lib.dataset_folder(config), target),
        "n": int(len(fake)),
        "n_real": int(len(real)),
        "kid": kid_mean,
        "kid_std": kid_std,
        "kid_x100": 100.0 * kid_mean,
        "kid_x100_std": 100.0 * kid_std,
        "kid_subset_size": int(m),
        "kid_subsets_identical": bool(m == len(real) == len(fake)),
        "fid": ev.fid(real, fake, method="auto"),
        "identity": {"kid_x100": 100.0 * id_mean, "kid_x100_std": 100.0 * id_std,
                     "fid": ev.fid(real, source_features, method="auto")},
        "paired": (paired_report(outputs, test[source]["views"], pairs,
                                 test[target]["views"])
                   if pairs is not None and pairs["truth"] is not None else None),
    }


def _scores(config, test: dict, extractor, directions: dict, t0: float) -> dict:
    """evaluate_networks' report: the settings, the per-direction scores and the time taken."""
    weights = inception_weights_arg(config.inception_weights)
    return {
        "dataset": config.dataset,
        "img_size": config.img_size,
        "inception_weights": config.inception_weights,
        "inception_weights_path": extractor.weights_path,
        "inception_random": weights is None,
        "fid_method": ev.fid_method(len(test["testA"]["inputs"]), len(test["testB"]["inputs"]),
                                    FEATURE_DIM),
        "kid_n_subsets": KID_SUBSETS,
        "kid_seed": KID_SEED,
        "directions": directions,
        "seconds": time.monotonic() - t0,
    }


# ---------------------------------------------------------------------------
# The eval phase
# ---------------------------------------------------------------------------

def checkpoint_step(prefix: str):
    """The training iteration stored in a checkpoint (its `step` variable), else the number
    in the prefix (ckpt-2000), else None."""
    import tensorflow as tf

    try:
        return int(tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except Exception:  # noqa: BLE001 - converted checkpoints have no step
        match = re.search(r"-(\d+)$", prefix)
        return int(match.group(1)) if match else None


def run_eval(config, log=print, checkpoint: str | None = None, progress: bool = True) -> dict:
    """``--phase eval``: load the latest checkpoint (or ``checkpoint``), score both
    directions, write result_dir/model_dir/eval.json atomically, log a table; returns the
    report. Errors: data.DataError, checkpoints.CheckpointError,
    inception.InceptionWeightsError (one-line messages for main)."""
    from ugatit_tf.model.checkpoints import load_networks

    config.validate()
    t0 = time.monotonic()
    cache: dict = {}
    # the cheap checks first: data, then checkpoint, then the Inception weights
    cache["key"] = _cache_key(config)
    cache["data"] = load_test_data(config, log)
    nets, prefix = load_networks(config, checkpoint=checkpoint)
    step = checkpoint_step(prefix)
    log(f" [*] Loaded {prefix} (step {step})")
    _extractor(cache, config)
    if cache["extractor"].weights_path is None:
        log(" [!] --inception_weights random: a randomly initialised InceptionV3; KID / FID "
            "are for smoke tests only, not comparable with anything (the paired score is "
            "unaffected)")
    scores = evaluate_networks(nets, config, cache, log=log, progress=progress)
    report = {
        "checkpoint": prefix,
        "step": step,
        **scores,
        "seconds": time.monotonic() - t0,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
    }
    path = os.path.join(config.result_dir, config.model_dir, EVAL_FILE)
    write_report(path, report)
    report["chart"] = write_eval_chart(report, os.path.splitext(path)[0] + ".png")
    report["path"] = path
    log(format_report(report))
    log(f" [*] Evaluation written to {path}")
    return report


def _num(value, fmt):
    if value is None or not np.isfinite(value):
        return "inf" if value is not None and value > 0 else "n/a"
    return format(value, fmt)


def format_report(report: dict) -> str:
    """A short text table of a report (run_eval's or evaluate_networks')."""
    lines = _kid_fid_lines(report)
    paired = {k: d["paired"] for k, d in report["directions"].items() if d.get("paired")}
    if paired:
        lines += _paired_lines(paired)
    return "\n".join(lines)


def _kid_text(scores: dict) -> str:
    """KID x 100 as 'mean +- std'."""
    return f"{_num(scores['kid_x100'], '.2f')} +- {_num(scores['kid_x100_std'], '.2f')}"


def _kid_fid_lines(report: dict) -> list[str]:
    """The KID / FID table: model and identity rows per direction, and the KID std note."""
    weights = "random (smoke test only)" if report.get("inception_random") else \
        str(report.get("inception_weights"))
    lines = [f" [*] KID x 100 and FID vs the target domain's test images "
             f"(Inception weights: {weights}; lower is better)",
             f"     {'direction':<9} {'n fake/real':>11} {'':<9} {'KIDx100':>17} {'FID':>10}"]
    notes = []
    for name, d in report["directions"].items():
        kid = _kid_text(d)
        lines.append(f"     {name:<9} {str(d['n']) + '/' + str(d['n_real']):>11} {'model':<9} "
                     f"{kid:>17} {_num(d['fid'], '.2f'):>10}")
        if d.get("identity"):
            i = d["identity"]
            kid = _kid_text(i)
            lines.append(f"     {'':<9} {'':>11} {'identity':<9} {kid:>17} "
                         f"{_num(i['fid'], '.2f'):>10}")
        if d.get("kid_subsets_identical"):
            notes.append(name)
    if notes:
        lines.append(f"     (KID std is 0 for {', '.join(notes)}: with <= {KID_MAX_SUBSET} "
                     "images every KID subset is the whole test set)")
    return lines


def _paired_lines(paired: dict) -> list[str]:
    """The paired-score table: a row per image set and the beats lines, per direction."""
    size = next(iter(paired.values()))["size"]
    lines = [f" [*] Paired score vs ground truth at {size}x{size} "
             "(L1 0..255 lower is better; PSNR dB, SSIM higher is better)",
             f"     {'direction':<9} {'n':>4} {'':<11} {'L1':>7} {'PSNR':>7} {'SSIM':>7}"]
    for name, p in paired.items():
        labels = [x for x in ("model", "identity", "target_mean") if x in p]
        for label in labels:
            s = p[label]
            lines.append(f"     {name if label == 'model' else '':<9} "
                         f"{str(p['n']) if label == 'model' else '':>4} "
                         f"{label.replace('_', ' '):<11} "
                         f"{_num(s['l1'], '.2f'):>7} {_num(s['psnr'], '.2f'):>7} "
                         f"{_num(s['ssim'], '.4f'):>7}")
        for base in ("identity", "target_mean"):
            if f"beats_{base}" in p:
                better = [m.upper() for m in METRICS if p[f"beats_{base}"][m]]
                lines.append(f"     {'':<9} {'':>4} model beats {base.replace('_', ' ')} "
                             f"on: {', '.join(better) or 'none'}")
    return lines


# ---------------------------------------------------------------------------
# During training
# ---------------------------------------------------------------------------

def evaluate_during_training(nets, config, step: int, writer, extractor_cache: dict,
                             log=None) -> dict:
    """The eval phase's scores for the in-memory networks at iteration ``step``, written to
    TensorBoard (``writer``, a tf.summary writer; None: not written) as
    eval/{A2B,B2A}/{kid_x100, kid_x100_std, fid, identity_kid_x100, identity_fid} and, with
    ground truth, eval/{A2B,B2A}/paired_{l1,psnr,ssim}, identity_{l1,psnr,ssim} and
    target_mean_{l1,psnr,ssim} (the baselines are constant; plotted for reference).
    ``extractor_cache`` is a dict the caller keeps between calls (start with {} or
    make_eval_cache(config)): it holds the Inception network, the test images and the real
    images' features, so later calls only translate and featurize the translations. Returns
    the scores (evaluate_networks' dict plus "step")."""
    import tensorflow as tf

    scores = evaluate_networks(nets, config, extractor_cache, log=log, progress=False)
    scores["step"] = int(step)
    if writer is not None:
        with writer.as_default(step=int(step)):
            for name, d in scores["directions"].items():
                tf.summary.scalar(f"eval/{name}/kid_x100", d["kid_x100"])
                tf.summary.scalar(f"eval/{name}/kid_x100_std", d["kid_x100_std"])
                tf.summary.scalar(f"eval/{name}/fid", d["fid"])
                tf.summary.scalar(f"eval/{name}/identity_kid_x100", d["identity"]["kid_x100"])
                tf.summary.scalar(f"eval/{name}/identity_fid", d["identity"]["fid"])
                p = d.get("paired")
                if p:
                    for m in METRICS:
                        tf.summary.scalar(f"eval/{name}/paired_{m}", p["model"][m])
                        tf.summary.scalar(f"eval/{name}/identity_{m}", p["identity"][m])
                        if "target_mean" in p:
                            tf.summary.scalar(f"eval/{name}/target_mean_{m}",
                                              p["target_mean"][m])
        writer.flush()
    if log is not None:
        parts = []
        for name, d in scores["directions"].items():
            text = f"{name} KIDx100 {d['kid_x100']:.2f} FID {d['fid']:.1f}"
            if d.get("paired"):
                p = d["paired"]
                text += (f" PSNR {p['model']['psnr']:.2f} (identity "
                         f"{p['identity']['psnr']:.2f})")
            parts.append(text)
        log(f" [*] eval at iteration {step} ({scores['seconds']:.0f} s): " + "; ".join(parts))
    return scores
