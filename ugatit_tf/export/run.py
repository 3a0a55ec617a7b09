"""`export_models(config, ...)`: what `python main.py --phase export` does.

It checks every option before any work (format, quantization, version, limits, model name, no
existing version or file overwritten), restores only the two generators from the latest
checkpoint (no discriminators, no optimizer state), and writes

    export_dir/
        models.config                   TF Serving model config (every SavedModel found here)
        README.md                       how to serve and call it
        NAME/VERSION/saved_model.pb     SavedModel in TF Serving's layout (NAME: --dataset)
        NAME/VERSION/variables/...
        tflite/NAME/VERSION/a2b_float32.tflite, b2a_int8.tflite, ...

int8 TFLite files are calibrated on images of each generator's input domain read from disk
(the data set's trainA / trainB, or --representative_dir). See docs/serving.md.
"""

from __future__ import annotations

import os

import numpy as np

from ugatit_tf.common.files import list_images, write_text_atomic
from ugatit_tf.config import Config
from ugatit_tf.export.guards import DEFAULT_MAX_BATCH, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ugatit_tf.export.saved_model import (NAME_RE, README_TITLE, ExportError, check_limits,
                                          docker_command, export_saved_model,
                                          refuse_existing_version, serving_instructions,
                                          write_models_config)
from ugatit_tf.export.tflite import (DEFAULT_REPRESENTATIVE_COUNT, export_tflite,
                                     quantizations_for)
from ugatit_tf.model.precision import resolve_precision

EXPORT_FORMATS = ("saved_model", "tflite", "all")
DIRECTIONS = ("a2b", "b2a")
README_PATH = ""  # "": export_dir/README.md; None: no README


def image_files(folder) -> list[str]:
    """The images directly in `folder` ([] when it is not a folder)."""
    return list_images(folder) if os.path.isdir(folder) else []


def load_images(files, limit=DEFAULT_REPRESENTATIVE_COUNT, seed=0) -> list[np.ndarray]:
    """Up to `limit` of the files (a seeded random choice when there are more), read as uint8
    RGB the way training reads them (`ugatit_tf.data.pipeline.load_rgb`)."""
    from ugatit_tf.data.pipeline import load_rgb
    files = list(files)
    if len(files) > limit:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    return [load_rgb(f) for f in files]


def _representative_images(config, representative_dir, quantizations, count) -> dict:
    """{direction: calibration images} when int8 files are asked for ({} otherwise), read
    before any work so that a missing or unreadable image stops the export early."""
    if "int8" not in quantizations:
        return {}
    return {d: _representative_for(config, representative_dir, d, count) for d in DIRECTIONS}


def _representative_for(config, representative_dir, direction, count):
    """Calibration images of the generator's input domain: trainA for A -> B, trainB for
    B -> A, from representative_dir (a data set folder with trainA/trainB, or a folder of
    images used for both directions) or the data set itself."""
    split = "trainA" if direction == "a2b" else "trainB"
    if representative_dir:
        files = image_files(os.path.join(representative_dir, split)) or image_files(
            representative_dir)
        where = representative_dir
    else:
        where = os.path.join(config.dataset_dir, config.dataset, split)
        files = image_files(where)
    if not files:
        raise ExportError(f"int8 quantization of {direction} needs representative images of its "
                          f"input domain and {where} has none; pass --representative_dir (a "
                          f"folder with {split}/ or with images)")
    return load_images(files, count, config.seed)


def _option(value, config, name, default):
    """An explicit argument, else the Config field of that name (if Config has it), else the
    default."""
    if value is not None:
        return value
    return getattr(config, name, default)


def export_models(config: Config, export_dir: str | None = None,
                  export_format: str | None = None, quantize: str | None = None,
                  version: int | None = None, max_bytes: int | None = None,
                  max_pixels: int | None = None, representative_dir: str | None = None,
                  model_name: str | None = None, max_batch: int | None = None,
                  float_io: bool | None = None,
                  representative_count: int = DEFAULT_REPRESENTATIVE_COUNT,
                  readme_path: str | None = README_PATH, nets=None) -> dict:
    """Restore the latest checkpoint of `config` and export it (see the module docstring).

    Every option left as None comes from the Config field of the same name when Config has
    one (--export_dir, --export_format, --quantize, --version, ...), else from the defaults:
    export_dir 'export', export_format 'saved_model', quantize 'none' (float32), version 1,
    max_bytes 10 MiB, max_pixels 4096*4096, max_batch 16, model_name --dataset, uint8 TFLite
    I/O. Returns the written paths: 'saved_model', 'models_config', 'readme' (for
    saved_model / all) and one '<direction>_<quantization>' key per TFLite file (for tflite /
    all). `nets` (already built Networks) skips the checkpoint restore."""
    export_dir = _option(export_dir, config, "export_dir", "export")
    export_format = _option(export_format, config, "export_format", "saved_model")
    quantize = _option(quantize, config, "quantize", "none")
    version = _option(version, config, "version", 1)
    max_bytes = _option(max_bytes, config, "max_bytes", DEFAULT_MAX_BYTES)
    max_pixels = _option(max_pixels, config, "max_pixels", DEFAULT_MAX_PIXELS)
    max_batch = _option(max_batch, config, "max_batch", DEFAULT_MAX_BATCH)
    representative_dir = _option(representative_dir, config, "representative_dir", None)
    float_io = bool(float_io)
    config.validate()
    quantizations = _check_format_and_version(export_format, quantize, version)
    name = _checked_model_name(model_name or config.dataset)
    check_limits(max_bytes, max_pixels, max_batch)
    saved_model_path = os.path.join(export_dir, name, str(version))
    tflite_paths = _tflite_paths(export_dir, name, version, quantizations)
    # Refuse before any work is done.
    precision = _export_precision(config, quantizations)
    _refuse_existing_exports(export_format, saved_model_path, tflite_paths)
    representative = _representative_images(config, representative_dir, quantizations,
                                            representative_count)
    if nets is None:
        nets = _restore_generators(config, precision)

    written = {}
    if export_format in ("saved_model", "all"):
        written.update(_write_saved_model(nets, config, export_dir, name, version,
                                          saved_model_path, max_bytes, max_pixels, max_batch,
                                          readme_path))
    written.update(_write_tflite_files(nets, config, tflite_paths, quantizations,
                                       representative, float_io))
    return written


def _check_format_and_version(export_format, quantize, version) -> list[str]:
    """Refuse a bad --export_format, --quantize or --version; returns the quantizations."""
    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"--export_format must be one of {', '.join(EXPORT_FORMATS)}; "
                          f"got {export_format!r}")
    quantizations = quantizations_for(quantize)  # checked even where unused
    if export_format == "saved_model":
        quantizations = []
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ExportError(f"--version must be a whole number >= 1, got {version!r}")
    return quantizations


def _checked_model_name(name) -> str:
    """`name`, refused unless it is a name TF Serving can put in URLs."""
    if not NAME_RE.match(name):
        raise ExportError(f"the model name {name!r} (from --dataset or --model_name) may only "
                          f"hold letters, digits, '.', '_' and '-': TF Serving puts it in URLs")
    return name


def _tflite_paths(export_dir, name, version, quantizations) -> dict[str, str]:
    """The TFLite file of each direction and quantization, by '<direction>_<quantization>'."""
    tflite_dir = os.path.join(export_dir, "tflite", name, str(version))
    return {f"{d}_{q}": os.path.join(tflite_dir, f"{d}_{q}.tflite")
            for q in quantizations for d in DIRECTIONS}


def _export_precision(config, quantizations) -> str:
    """The --mixed_precision of the export, refused when TFLite files are asked for."""
    precision = resolve_precision(config.mixed_precision, "export")  # auto: float32
    if quantizations and precision != "none":
        raise ExportError(f"--mixed_precision {precision} applies to the "
                          f"SavedModel only; TFLite files take --quantize (float16, dynamic, "
                          f"int8) instead: export them without --mixed_precision")
    return precision


def _refuse_existing_exports(export_format, saved_model_path, tflite_paths):
    """Refuse to export when the SavedModel version or a TFLite file already exists."""
    if export_format in ("saved_model", "all"):
        refuse_existing_version(os.path.abspath(saved_model_path))
    for path in tflite_paths.values():
        if os.path.exists(path):
            raise ExportError(f"{path} already exists; export with a new --version or "
                              f"remove it")


def _restore_generators(config, precision):
    """Networks with the two generators of the latest checkpoint restored."""
    from ugatit_tf.model.checkpoints import load_networks
    nets, prefix = load_networks(config, mixed_precision=precision)
    print(f"[export] restored {prefix}")
    return nets


def _write_saved_model(nets, config, export_dir, name, version, path, max_bytes, max_pixels,
                       max_batch, readme_path) -> dict:
    """Write the SavedModel, models.config and the README (not over a README.md of the
    user's own); returns their paths by key."""
    written = {}
    written["saved_model"] = export_saved_model(nets, config, path, max_bytes, max_pixels,
                                                max_batch)
    models_config = write_models_config(export_dir)
    if models_config:
        written["models_config"] = models_config
    else:
        print(f"[export] kept {os.path.join(export_dir, 'models.config')}: it was not written "
              f"by the export; add {name} (base_path /models/{name}) to it yourself")
    text = serving_instructions(export_dir, name, config.img_size, version)
    print(f"[export] SavedModel: {written['saved_model']}")
    print(f"[export] serve it with:\n  {docker_command(export_dir, name)}")
    if readme_path == "":
        readme_path = os.path.join(export_dir, "README.md")
    if readme_path and not _ours_or_absent(readme_path):
        print(f"[export] kept {readme_path}: it was not written by the export (the serving "
              f"instructions are in docs/serving.md)")
    elif readme_path:
        write_text_atomic(readme_path, text)
        written["readme"] = readme_path
    return written


def _ours_or_absent(path) -> bool:
    """Whether `path` does not exist or holds serving instructions an export wrote."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(len(README_TITLE)) == README_TITLE
    except FileNotFoundError:
        return True


def _write_tflite_files(nets, config, tflite_paths, quantizations, representative,
                        float_io) -> dict:
    """Convert each generator in each quantization (int8 calibrated on `representative`'s
    images of its input domain); returns the files by key."""
    generators = {"a2b": nets.genA2B, "b2a": nets.genB2A}
    written = {}
    for q in quantizations:
        for direction in DIRECTIONS:
            key = f"{direction}_{q}"
            written[key] = export_tflite(generators[direction], config, tflite_paths[key], q,
                                         representative.get(direction), float_io=float_io)
            print(f"[export] TFLite {key}: {written[key]} "
                  f"({os.path.getsize(written[key]) / 2**20:.1f} MiB)")
    return written
