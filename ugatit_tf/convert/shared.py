"""What both converters share: the result, the original layouts, names and configuration.

`source_shape` / `to_ours` translate between a variable's layout in the original checkpoint
(`Entry.layout`) and ours; `parse_model_dir` reads the flags an original folder name encodes;
`infer_config` turns the first MLP kernel into (light, img_size); `make_config` builds the
Config; `problems` / `raise_problems` list every missing, unknown and misshapen variable in one
`ConversionError`; `shape_only_networks` gives the four networks' variables with their shapes
but no memory, so a full-size model is checked and planned without being built.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ugatit_tf.config import GAN_TYPES, Config, ConfigError

if TYPE_CHECKING:  # the model (and TensorFlow) is imported only when a conversion runs
    from ugatit_tf.model.layers import Entry

SOURCES = ("tf1", "pytorch")

# Flags that leave no trace in the weights but are part of model_dir.
NAMING_FLAGS = ("gan_type", "n_critic", "adv_weight", "cycle_weight", "identity_weight",
                "cam_weight", "smoothing")


class ConversionError(RuntimeError):
    """The source checkpoint cannot be converted; the message says why (all names listed)."""


@dataclass
class ConversionResult:
    config: Config
    folder: str              # checkpoint_dir/model_dir
    checkpoint: str          # prefix of the written checkpoint (folder/ckpt-STEP)
    step: int
    optimizer: str           # 'converted', 'fresh' or 'omitted'
    g_iterations: int = 0
    d_iterations: int = 0
    notes: list = field(default_factory=list)

    @property
    def flags(self) -> str:
        return main_flags(self.config)


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------

def source_shape(entry: Entry) -> tuple:
    """The shape a variable has in the original checkpoint, given its layout."""
    shape = tuple(int(d) for d in entry.variable.shape)
    layout = entry.layout
    if layout in ("hwio", "io", "vector", "u_row", "flat"):
        return shape
    if layout == "oihw":
        h, w, i, o = shape
        return (o, i, h, w)
    if layout in ("oi", "oi_chw"):
        return shape[::-1]
    if layout == "c111":
        return (1, shape[0], 1, 1)
    raise ValueError(f"unknown layout {layout!r}")


def to_ours(entry: Entry, value: np.ndarray) -> np.ndarray:
    """Convert an original checkpoint value (in `entry.layout`) to our layout."""
    layout = entry.layout
    if layout in ("hwio", "io", "vector", "u_row", "flat"):
        out = value
    elif layout == "oihw":
        out = np.transpose(value, (2, 3, 1, 0))
    elif layout == "oi":
        out = value.T
    elif layout == "oi_chw":
        # torch flattens NCHW in (c, h, w) order, we flatten NHWC in (h, w, c) order
        h, w, c = entry.spatial
        n_out = value.shape[0]
        out = value.reshape(n_out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, n_out)
    elif layout == "c111":
        out = value.reshape(-1)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------

_MODEL_DIR_RE = re.compile(
    r"^(?P<model>UGATIT(?:_light)?)_(?P<dataset>.+)_(?P<gan_type>{})_(?P<n_res>\d+)resblock_"
    r"(?P<n_dis>\d+)dis_(?P<n_critic>\d+)_(?P<adv>[^_]+)_(?P<cycle>[^_]+)_(?P<identity>[^_]+)_"
    r"(?P<cam>[^_]+?)(?P<sn>_sn)?(?P<smoothing>_smoothing)?(?:_pytorch)?$".format(
        "|".join(re.escape(g) for g in GAN_TYPES)))


def number(text):
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_model_dir(name: str) -> dict | None:
    """The flags encoded in an original checkpoint folder name, or None if it has another
    form. `UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing` ->
    {'light': False, 'dataset': 'selfie2anime', 'gan_type': 'lsgan', 'n_res': 4, ...}."""
    m = _MODEL_DIR_RE.match(os.path.basename(os.path.normpath(name)))
    if not m:
        return None
    try:
        return {"light": m["model"] == "UGATIT_light", "dataset": m["dataset"],
                "gan_type": m["gan_type"], "n_res": int(m["n_res"]), "n_dis": int(m["n_dis"]),
                "n_critic": int(m["n_critic"]), "adv_weight": number(m["adv"]),
                "cycle_weight": number(m["cycle"]), "identity_weight": number(m["identity"]),
                "cam_weight": number(m["cam"]), "sn": bool(m["sn"]),
                "smoothing": bool(m["smoothing"])}
    except ValueError:
        return None


def main_flags(config: Config) -> str:
    """The main.py flags that select this configuration (and so find its checkpoint)."""
    default = Config()
    parts = [f"--dataset {shlex.quote(config.dataset)}"]
    if config.variant != default.variant:
        parts.append(f"--variant {config.variant}")
    parts += [f"--light {config.light}", f"--img_size {config.img_size}", f"--ch {config.ch}",
              f"--n_res {config.n_res}", f"--n_dis {config.n_dis}", f"--sn {config.sn}",
              f"--smoothing {config.smoothing}"]
    for name in ("gan_type", "n_critic", "adv_weight", "cycle_weight", "identity_weight",
                 "cam_weight", "checkpoint_dir"):
        value = getattr(config, name)
        if value != getattr(default, name):
            parts.append(f"--{name} {shlex.quote(str(value))}")  # copied into a shell
    return " ".join(parts)


def step_from_name(path: str, pattern: str) -> int | None:
    m = re.search(pattern, os.path.basename(path))
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

def count_names(prefix_fmt: str, names, start=0) -> int:
    n = start
    while prefix_fmt.format(n) in names:
        n += 1
    return n - start


def infer_size(rows: int, bottleneck: int, img_size: int | None, what: str):
    """(light, img_size, note) from the first MLP kernel's input size."""
    if rows == bottleneck:
        if img_size is None:
            return True, 256, ("light model: the image size leaves no trace in the weights; "
                               "using --img_size 256 (pass --img_size to choose another)")
        return True, img_size, None
    side2, rest = divmod(rows, bottleneck)
    side = math.isqrt(side2) if side2 > 0 else 0
    if rest or side * side != side2:
        raise ConversionError(
            f"{what} has {rows} inputs, which is neither ch*4 = {bottleneck} (light model) "
            f"nor (img_size/4)^2 * {bottleneck} (full model)")
    inferred = side * 4
    if img_size is not None and img_size != inferred:
        raise ConversionError(
            f"--img_size {img_size} does not match the checkpoint: the full model's "
            f"{what} has {rows} = ({inferred}/4)^2 * {bottleneck} inputs, i.e. img_size "
            f"{inferred}")
    return False, inferred, None


def make_config(variant, arch, dataset, checkpoint_dir, naming, overrides, notes):
    values = dict(naming or {})
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    if naming:
        for name in ("light", "n_res", "n_dis", "sn"):
            if name in naming and naming[name] != arch[name]:
                notes.append(f"the folder name says {name}={naming[name]} but the weights say "
                             f"{arch[name]}; using {arch[name]}")
    values = {k: v for k, v in values.items() if k in NAMING_FLAGS}
    config = Config(variant=variant, dataset=dataset,
                    checkpoint_dir=checkpoint_dir, **arch, **values)
    try:
        return config.validate()
    except ConfigError as e:
        raise ConversionError(f"the checkpoint's configuration is not usable: {e}") from e


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def _fmt_shape(shape):
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def problems(expected: dict, found: dict, ignore=()) -> tuple[list, list, list]:
    """(missing, unexpected, wrong-shape lines), each sorted."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected) - set(ignore))
    wrong = sorted(f"{n}: checkpoint {_fmt_shape(found[n])}, expected {_fmt_shape(expected[n])}"
                   for n in set(expected) & set(found)
                   if tuple(int(d) for d in found[n]) != tuple(expected[n]))
    return missing, unexpected, wrong


def unknown_ignored(unexpected, ignore_unknown, notes):
    """With ignore_unknown, names the network does not have become a note, not an error."""
    if unexpected and ignore_unknown:
        notes.append(f"ignored {len(unexpected)} variables unknown to the network: "
                     + ", ".join(unexpected))
        return []
    return unexpected


def raise_problems(source, config, missing, unexpected, wrong, extra_lines=()):
    if not (missing or unexpected or wrong or extra_lines):
        return
    lines = [f"cannot convert {source}: it does not match the {config.variant} network "
             f"(light={config.light}, ch={config.ch}, n_res={config.n_res}, "
             f"n_dis={config.n_dis}, sn={config.sn}, img_size={config.img_size})"]
    for title, items in (("missing from the checkpoint", missing),
                         ("unknown to the network", unexpected),
                         ("wrong shape", wrong)):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {item}" for item in items]
    lines += list(extra_lines)
    raise ConversionError("\n".join(lines))


def check_coverage(models, name_maps: list[dict]) -> None:
    """Every variable of the networks must have a checkpoint name (a bug otherwise)."""
    covered = {id(e.variable) for m in name_maps for e in m.values()}
    left = sorted(v.path for m in models for v in m.variables if id(v) not in covered)
    if left:
        raise ConversionError("internal error: these variables have no name in the original "
                              "checkpoint layout: " + ", ".join(left))


def shape_only_networks(config: Config, discriminators: bool = True) -> list:
    """The networks of `config` (generator_B, generator_A[, discriminator_A, discriminator_B])
    with every variable created but none allocated: Keras defers the initialisation of
    variables made in a StatelessScope, and the models are built on a symbolic input. Their
    name maps (tf1_name_map / torch_name_map) give every variable's path, shape and dtype,
    which is all a conversion plan needs; the values are written by `writer`."""
    import keras

    from ugatit_tf.model.networks import Discriminator, Generator

    kinds = [(Generator, "generator_B"), (Generator, "generator_A")]
    if discriminators:
        kinds += [(Discriminator, "discriminator_A"), (Discriminator, "discriminator_B")]
    models = []
    shape = (1, config.img_size, config.img_size, config.img_ch)
    with keras.StatelessScope(initialize_variables=False):
        for cls, name in kinds:
            model = cls(config, name=name)
            model(keras.KerasTensor(shape))
            models.append(model)
    _forget_deferred(models)
    return models


def _forget_deferred(models) -> None:
    """Keras keeps deferred variables in a global list and initialises all of them when any
    later StatelessScope closes (building the writer's twin does): at full size that is the
    2.7 GB of weights this module exists to avoid. Take ours off that list (Keras has no
    public call for it; if the list moves, the cost is memory, not a wrong result)."""
    from keras.src.backend.common import global_state

    ours = {id(v) for m in models for v in m.variables}
    pending = global_state.get_global_attribute("uninitialized_variables") or []
    global_state.set_global_attribute("uninitialized_variables",
                                      [v for v in pending if id(v) not in ours])
