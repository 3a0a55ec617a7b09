"""Convert the originals' checkpoints into checkpoints of this port.

Two sources:

- `tf1`: a checkpoint of the official TF1 code (taki0112/UGATIT), e.g. the released
  selfie2anime weights `UGATIT.model-1000001.{index,data-*}`. Read with
  `tf.train.load_checkpoint` (no TF1 graph is built), mapped through `tf1_name_map` into the
  tf1 variant. The TF1 Adam state comes along when present (see "Adam state" below).
- `pytorch`: a checkpoint of the official PyTorch code (znxlwm/UGATIT-pytorch): a
  `torch.save` of {'genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB'} state_dicts, read
  without torch by `ugatit_tf.torch_format` (safe for untrusted files), mapped through
  `torch_name_map` into the pytorch variant.

The architecture (light/full, ch, n_res, n_dis, sn, and for the full model img_size) is read
off the variable shapes; flags that leave no trace in the weights (gan_type, the loss weights,
n_critic, smoothing) come from the original's folder name when it has the original form
(`UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing`), otherwise from the
defaults, and can always be given explicitly.

Every variable is accounted for: names the networks do not have, names the networks need but
the checkpoint lacks, and shapes that differ all end in one `ConversionError` listing every
one of them (sorted); `ignore_unknown=True` (--ignore_unknown) only downgrades the first kind
to a listed note, for checkpoints that carry extra variables. The result is built in a temporary folder next to the destination and
moved into place only when complete, so a failure leaves nothing half-written; an existing
non-empty destination is only replaced with `force=True`.

Output: `checkpoint_dir/model_dir/` with config.json and a checkpoint `ckpt-STEP` holding
generator_B, generator_A, discriminator_A, discriminator_B, G_optim, D_optim (Keras Adam, see
`train.optimizer.make_optimizer`) and `step` (a tf.int64 variable). STEP is the TF1 global counter
from the checkpoint file name (`UGATIT.model-1000001` -> 1000001; in the TF1 training loop the
counter is the number of finished iterations + 1) or the step in the PyTorch file name
(`selfie2anime_params_0100000.pt` -> 100000); 0 when the name has none. The trainer resumes
at iteration STEP, just as the TF1 original resumes at its counter.

Adam state (TF1): every trainable variable `<var>` has slots `<var>/Adam` (m) and
`<var>/Adam_1` (v), copied into the Keras Adam momentums / velocities (same definition: TF1
and Keras both keep the raw, not bias-corrected, moments). The step counts are kept by TF1 as
beta powers. The original builds `G_optim` (AdamOptimizer.minimize over the generator
variables) BEFORE `D_optim`, and each AdamOptimizer creates non-slot variables named
`beta1_power` / `beta2_power` in the graph's root scope; the second one gets the uniquified
names `beta1_power_1` / `beta2_power_1`. So `beta1_power`, `beta2_power` belong to the
generators' Adam and `beta1_power_1`, `beta2_power_1` to the discriminators'. TF1 starts
beta1_power at beta1 and multiplies it by beta1 after every step, so after n steps it holds
0.5^(n+1): t = round(log(beta1_power) / log(0.5)) and Keras' `iterations` (steps done; Keras
uses iterations + 1 as the exponent of the next step) = t - 1. beta1_power is exact in float32
down to 2^-149, i.e. for the first ~125-148 steps; after that it has underflowed to 0, and the
count is taken from the checkpoint counter (D steps = counter - 1, G steps =
ceil((counter - 1) / n_critic), as in the original loop), else estimated from beta2_power, else
set to the first count at which float32 0.999^t underflows (87,000+; from ~17,000 steps on the
bias correction is exactly 1 in float32, so the updates are the same). Without Adam slots in
the source (PyTorch files, stripped TF1 checkpoints) the optimizers start fresh (zero moments,
iterations 0); `optimizer=False` leaves them out of the checkpoint (inference only: a third of
the size).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ugatit_tf.config import GAN_TYPES, Config, ConfigError
from ugatit_tf.model.layers import Entry
from ugatit_tf.convert import torch_format

__all__ = ["ConversionError", "ConversionResult", "convert", "convert_tf1", "convert_pytorch",
           "infer_tf1_config", "infer_torch_config", "parse_model_dir", "main_flags", "verify",
           "adam_iterations", "source_shape", "to_ours", "SOURCES"]

SOURCES = ("tf1", "pytorch")

# Flags that leave no trace in the weights but are part of model_dir.
NAMING_FLAGS = ("gan_type", "n_critic", "adv_weight", "cycle_weight", "identity_weight",
                "cam_weight", "smoothing")

TORCH_KEYS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")

# float32 with flush-to-zero (TF's CPU kernels) underflows 0.999^t to 0 from this t on.
_BETA2_UNDERFLOW_T = math.ceil(math.log(2.0 ** -126) / math.log(0.999))


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
# Names in folder / file names
# ---------------------------------------------------------------------------

_MODEL_DIR_RE = re.compile(
    r"^(?P<model>UGATIT(?:_light)?)_(?P<dataset>.+)_(?P<gan_type>{})_(?P<n_res>\d+)resblock_"
    r"(?P<n_dis>\d+)dis_(?P<n_critic>\d+)_(?P<adv>[^_]+)_(?P<cycle>[^_]+)_(?P<identity>[^_]+)_"
    r"(?P<cam>[^_]+?)(?P<sn>_sn)?(?P<smoothing>_smoothing)?(?:_pytorch)?$".format(
        "|".join(re.escape(g) for g in GAN_TYPES)))


def _number(text):
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
                "n_critic": int(m["n_critic"]), "adv_weight": _number(m["adv"]),
                "cycle_weight": _number(m["cycle"]), "identity_weight": _number(m["identity"]),
                "cam_weight": _number(m["cam"]), "sn": bool(m["sn"]),
                "smoothing": bool(m["smoothing"])}
    except ValueError:
        return None


def main_flags(config: Config) -> str:
    """The main.py flags that select this configuration (and so find its checkpoint)."""
    default = Config()
    parts = [f"--dataset {config.dataset}"]
    if config.variant != default.variant:
        parts.append(f"--variant {config.variant}")
    parts += [f"--light {config.light}", f"--img_size {config.img_size}", f"--ch {config.ch}",
              f"--n_res {config.n_res}", f"--n_dis {config.n_dis}", f"--sn {config.sn}",
              f"--smoothing {config.smoothing}"]
    for name in ("gan_type", "n_critic", "adv_weight", "cycle_weight", "identity_weight",
                 "cam_weight", "checkpoint_dir"):
        value = getattr(config, name)
        if value != getattr(default, name):
            parts.append(f"--{name} {value}")
    return " ".join(parts)


def _step_from_name(path: str, pattern: str) -> int | None:
    m = re.search(pattern, os.path.basename(path))
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------
# Architecture inference
# ---------------------------------------------------------------------------

def _count(prefix_fmt: str, names, start=0) -> int:
    n = start
    while prefix_fmt.format(n) in names:
        n += 1
    return n - start


def _img_size_from_mlp(rows: int, bottleneck: int, img_size: int | None, what: str):
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


def infer_tf1_config(shapes: dict, img_size: int | None = None) -> tuple[dict, list]:
    """Architecture flags of a TF1 checkpoint from its {name: shape}: ({light, ch, n_res,
    n_dis, sn, img_size, img_ch}, notes)."""
    names = set(shapes)
    g = "generator_B/"
    first = shapes.get(g + "conv/conv2d/kernel")
    if first is None:
        if any(n.endswith("/.ATTRIBUTES/VARIABLE_VALUE") for n in names):
            raise ConversionError(
                "this is a TF2 object-based checkpoint (perhaps one of ours, already "
                "converted), not a checkpoint of the original TF1 code")
        sample = ", ".join(sorted(names)[:5])
        raise ConversionError(
            f"not a U-GAT-IT TF1 checkpoint: it has no generator_B/conv/conv2d/kernel "
            f"(it has {len(names)} variables, e.g. {sample})")
    if len(first) != 4:
        raise ConversionError(f"generator_B/conv/conv2d/kernel has shape {list(first)}, "
                              f"expected [7, 7, 3, ch]")
    ch, img_ch = int(first[3]), int(first[2])
    n_res = _count(g + "resblock_{}/res1/conv_0/conv2d/kernel", names)
    mlp = shapes.get(g + "MLP/linear_0/dense/kernel")
    if mlp is None or len(mlp) != 2:
        raise ConversionError("not a U-GAT-IT TF1 checkpoint: generator_B/MLP/linear_0/dense/"
                              "kernel is missing or not a matrix")
    light, size, note = _img_size_from_mlp(int(mlp[0]), ch * 4, img_size,
                                           "generator_B/MLP/linear_0/dense/kernel")
    d = "discriminator_A/global/"
    if d + "conv_0/kernel" in names or d + "conv_0/u" in names:
        sn, suffix = True, ""
    elif d + "conv_0/conv2d/kernel" in names:
        sn, suffix = False, "/conv2d"
    else:
        raise ConversionError("not a U-GAT-IT TF1 checkpoint: it has no "
                              "discriminator_A/global/conv_0 kernel")
    n_dis = _count(d + "conv_{}" + suffix + "/kernel", names) + 1
    arch = dict(light=light, ch=ch, n_res=n_res, n_dis=n_dis, sn=sn, img_size=size,
                img_ch=img_ch)
    return arch, [note] if note else []


def infer_torch_config(state: dict, img_size: int | None = None) -> tuple[dict, list]:
    """Architecture flags of an official PyTorch checkpoint dict (see infer_tf1_config)."""
    g = state.get("genA2B")
    if not isinstance(g, dict) or "DownBlock.1.weight" not in g:
        raise ConversionError("not a U-GAT-IT PyTorch checkpoint: it has no "
                              "genA2B['DownBlock.1.weight']")
    first = np.shape(g["DownBlock.1.weight"])
    if len(first) != 4:
        raise ConversionError(f"genA2B/DownBlock.1.weight has shape {list(first)}, expected "
                              f"[ch, 3, 7, 7]")
    ch, img_ch = int(first[0]), int(first[1])
    n_res = _count("DownBlock.{}.conv_block.1.weight", g, start=12)
    fc = g.get("FC.0.weight")
    if fc is None or np.ndim(fc) != 2:
        raise ConversionError("not a U-GAT-IT PyTorch checkpoint: genA2B/FC.0.weight is "
                              "missing or not a matrix")
    light, size, note = _img_size_from_mlp(int(np.shape(fc)[1]), ch * 4, img_size,
                                           "genA2B/FC.0.weight")
    d = state.get("disGA")
    if not isinstance(d, dict):
        raise ConversionError("not a U-GAT-IT PyTorch checkpoint: it has no disGA")
    if "model.1.weight_orig" in d:
        sn, leaf = True, "weight_orig"
    elif "model.1.weight" in d:
        sn, leaf = False, "weight"
    else:
        raise ConversionError("not a U-GAT-IT PyTorch checkpoint: disGA has no model.1 "
                              "convolution")
    n_convs = 0
    while f"model.{1 + 3 * n_convs}.{leaf}" in d:
        n_convs += 1
    n_dis = n_convs  # global head: n_dis - 1 stride-2 convs + conv_last
    arch = dict(light=light, ch=ch, n_res=n_res, n_dis=n_dis, sn=sn, img_size=size,
                img_ch=img_ch)
    return arch, [note] if note else []


def _make_config(variant, arch, dataset, checkpoint_dir, naming, overrides, notes):
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


def _problems(expected: dict, found: dict, ignore=()) -> tuple[list, list, list]:
    """(missing, unexpected, wrong-shape lines), each sorted."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected) - set(ignore))
    wrong = sorted(f"{n}: checkpoint {_fmt_shape(found[n])}, expected {_fmt_shape(expected[n])}"
                   for n in set(expected) & set(found)
                   if tuple(int(d) for d in found[n]) != tuple(expected[n]))
    return missing, unexpected, wrong


def _unknown_ignored(unexpected, ignore_unknown, notes):
    """With ignore_unknown, names the network does not have become a note, not an error."""
    if unexpected and ignore_unknown:
        notes.append(f"ignored {len(unexpected)} variables unknown to the network: "
                     + ", ".join(unexpected))
        return []
    return unexpected


def _raise_problems(source, config, missing, unexpected, wrong, extra_lines=()):
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


def _check_coverage(nets, name_maps: list[dict]) -> None:
    """Every variable of the networks must have a checkpoint name (a bug otherwise)."""
    covered = {id(e.variable) for m in name_maps for e in m.values()}
    models = nets.generators + nets.discriminators
    left = sorted(v.path for m in models for v in m.variables if id(v) not in covered)
    if left:
        raise ConversionError("internal error: these variables have no name in the original "
                              "checkpoint layout: " + ", ".join(left))


# ---------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------

def adam_iterations(beta1_power: float | None, beta2_power: float | None,
                    counter_steps: int | None, beta1: float = 0.5,
                    beta2: float = 0.999) -> tuple[int, str]:
    """Keras `iterations` (steps done) of a TF1 Adam from its beta powers (see the module
    docstring), with where the number came from."""
    if beta1_power is not None and beta1_power > 0:
        t = round(math.log(float(beta1_power)) / math.log(beta1))
        return max(t - 1, 0), "beta1_power"
    if counter_steps is not None:
        return counter_steps, "checkpoint counter"
    if beta2_power is not None and beta2_power > 0:
        t = round(math.log(float(beta2_power)) / math.log(beta2))
        return max(t - 1, 0), "beta2_power (approximate)"
    return _BETA2_UNDERFLOW_T, "lower bound (both beta powers underflowed)"


def _adam_slots(optimizer, variable):
    # Keras 3 Adam: momentums / velocities are lists aligned with the variables it was built
    # with; _get_variable_index maps a variable to its position.
    try:
        index = optimizer._get_variable_index(variable)
        return optimizer._momentums[index], optimizer._velocities[index]
    except (AttributeError, KeyError, IndexError) as e:  # pragma: no cover
        raise ConversionError(f"internal error: no Adam slots for {variable.path} "
                              f"({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def _is_nonempty_dir(path):
    return os.path.isdir(path) and bool(os.listdir(path))


def _check_destination(folder, force):
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConversionError(f"{folder} exists and is not a folder")
    if _is_nonempty_dir(folder) and not force:
        raise ConversionError(f"{folder} already exists and is not empty; pass --force to "
                              f"replace it (its contents will be deleted)")


def _write(nets, config, step, g_optim, d_optim, force):
    """Write config.json + checkpoint into a temp folder next to the destination, then move
    it into place. Returns (folder, checkpoint prefix)."""
    import tensorflow as tf

    from ugatit_tf.model.checkpoints import make_checkpoint, model_checkpoint_dir, write_config

    folder = model_checkpoint_dir(config)
    _check_destination(folder, force)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{config.model_dir}.converting-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would stay on the final folder
    old = None
    try:
        write_config(tmp, config)
        step_var = tf.Variable(step, dtype=tf.int64, trainable=False, name="step")
        ckpt = make_checkpoint(nets, g_optim, d_optim, step=step_var)
        manager = tf.train.CheckpointManager(ckpt, tmp, max_to_keep=config.keep_checkpoints)
        written = manager.save(checkpoint_number=step)
        name = os.path.basename(written)
        # the state file must name the checkpoint relative to its folder (it is moved)
        state_file = os.path.join(tmp, "checkpoint")
        with open(state_file) as f:
            relative = tmp not in f.read()
        if not relative:  # pragma: no cover (CheckpointManager writes relative paths)
            tf.compat.v1.train.update_checkpoint_state(
                tmp, name, all_model_checkpoint_paths=[name], save_relative_paths=True)
        _check_destination(folder, force)
        if os.path.isdir(folder):
            if os.listdir(folder):
                old = tempfile.mkdtemp(prefix=f".{config.model_dir}.replaced-", dir=parent)
                os.rmdir(old)
                os.rename(folder, old)
            else:
                os.rmdir(folder)
        os.rename(tmp, folder)
        tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder, os.path.join(folder, name)


def _new_optimizers(nets, config):
    from ugatit_tf.model.checkpoints import build_optimizers
    from ugatit_tf.train.optimizer import make_optimizer

    g_optim = make_optimizer(config, "G_optim")
    d_optim = make_optimizer(config, "D_optim")
    build_optimizers(nets, g_optim, d_optim)
    return g_optim, d_optim


# ---------------------------------------------------------------------------
# TF1
# ---------------------------------------------------------------------------

def _resolve_tf1_prefix(path: str) -> str:
    import tensorflow as tf

    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is not None:
            return prefix
        # no usable state file (e.g. it names paths on the authors' machine): the newest
        # counter among the .index files
        found = []
        for name in os.listdir(path):
            m = re.match(r"^(.*?)(?:-(\d+))?\.index$", name)
            if m:
                found.append((int(m.group(2) or -1), os.path.join(path, name[:-len(".index")])))
        if not found:
            raise ConversionError(f"{path} holds no TF1 checkpoint (no .index file); pass "
                                  f"the checkpoint prefix, e.g. {path}/UGATIT.model-1000001")
        return max(found)[1]
    m = re.match(r"^(.*?)(\.index|\.meta|\.data-\d+-of-\d+)$", path)
    return m.group(1) if m else path


def _read_tf1_map(prefix):
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = {n: tuple(s) for n, s in reader.get_variable_to_shape_map().items()}
        dtypes = reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError, OSError, IndexError, RuntimeError) as e:
        raise ConversionError(f"cannot read the TF1 checkpoint {prefix}: "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
    return reader, shapes, dtypes


def convert_tf1(checkpoint: str, dataset: str | None = None, checkpoint_dir: str = "checkpoints",
                img_size: int | None = None, force: bool = False, optimizer: bool = True,
                overrides: dict | None = None, ignore_unknown: bool = False,
                log=print) -> ConversionResult:
    """Convert a checkpoint of the official TF1 code (path prefix `.../UGATIT.model-N`, or its
    folder) into checkpoint_dir/model_dir. `overrides` sets naming flags (gan_type, n_critic,
    the loss weights, smoothing); None values are ignored."""
    import tensorflow as tf

    prefix = _resolve_tf1_prefix(checkpoint)
    reader, shapes, dtypes = _read_tf1_map(prefix)
    arch, notes = infer_tf1_config(shapes, img_size)
    naming = parse_model_dir(os.path.dirname(os.path.abspath(prefix)))
    dataset = dataset or (naming or {}).get("dataset")
    if not dataset:
        raise ConversionError("pass --dataset NAME (the folder name of the checkpoint does not "
                              "say it)")
    config = _make_config("tf1", arch, dataset, checkpoint_dir, naming, overrides, notes)
    from ugatit_tf.model.checkpoints import model_checkpoint_dir
    _check_destination(model_checkpoint_dir(config), force)  # fail before the heavy work
    counter = _step_from_name(prefix, r"-(\d+)$")
    step = counter or 0

    from ugatit_tf.model.networks import Networks, tf1_name_map
    nets = Networks(config, discriminators=True)
    name_maps = [tf1_name_map(m) for m in nets.generators + nets.discriminators]
    _check_coverage(nets, name_maps)
    entries = {n: e for m in name_maps for n, e in m.items()}
    expected = {n: source_shape(e) for n, e in entries.items()}

    # Adam state: slots of the trainable variables and the beta powers (G first, see above)
    g_names = [n for m in name_maps[:2] for n, e in m.items() if e.variable.trainable]
    d_names = [n for m in name_maps[2:] for n, e in m.items() if e.variable.trainable]
    adam = {}
    for n in g_names + d_names:
        adam[n + "/Adam"] = expected[n]
        adam[n + "/Adam_1"] = expected[n]
    powers = {"beta1_power": (), "beta2_power": (), "beta1_power_1": (), "beta2_power_1": ()}
    adam_found = sorted(set(shapes) & (set(adam) | set(powers)))
    with_adam = bool(adam_found)
    if with_adam and optimizer:
        expected_all = {**expected, **adam, **powers}
    else:
        expected_all = expected
    ignore = (set(adam) | set(powers)) if not optimizer else ()
    missing, unexpected, wrong = _problems(expected_all, shapes, ignore)
    bad_types = sorted(f"{n}: dtype {dtypes[n].name}, expected a float type"
                       for n in set(expected_all) & set(shapes)
                       if not dtypes[n].is_floating)
    unexpected = _unknown_ignored(unexpected, ignore_unknown, notes)
    _raise_problems(prefix, config, missing, unexpected, wrong,
                    ([f"not floating point ({len(bad_types)}):"] +
                     [f"  {b}" for b in bad_types]) if bad_types else ())

    unreadable = []

    def read(name):
        try:
            return reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:
            unreadable.append(f"{name}: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200]}")
            return None

    log(f"converting {len(entries)} variables from {prefix}")
    for name, entry in entries.items():
        value = read(name)
        if value is not None:
            entry.variable.assign(to_ours(entry, value).astype(entry.variable.dtype))

    g_optim = d_optim = None
    g_iters = d_iters = 0
    state = "omitted"
    if with_adam and not optimizer:
        notes.append("the checkpoint's Adam state is left out (no optimizer requested)")
    if optimizer:
        g_optim, d_optim = _new_optimizers(nets, config)
        state = "fresh"
        if with_adam:
            state = "converted"
            for optim, names in ((g_optim, g_names), (d_optim, d_names)):
                for n in names:
                    m_var, v_var = _adam_slots(optim, entries[n].variable)
                    for slot_var, slot in ((m_var, "/Adam"), (v_var, "/Adam_1")):
                        value = read(n + slot)
                        if value is not None:
                            slot_var.assign(to_ours(entries[n], value).astype(slot_var.dtype))
            steps = None if counter is None else max(counter - 1, 0)
            g_steps = None if steps is None else -(-steps // config.n_critic)
            for optim, suffix, counted, who in ((g_optim, "", g_steps, "G"),
                                                (d_optim, "_1", steps, "D")):
                b1, b2 = read("beta1_power" + suffix), read("beta2_power" + suffix)
                iters, how = adam_iterations(None if b1 is None else float(b1),
                                             None if b2 is None else float(b2), counted)
                optim.iterations.assign(iters)
                notes.append(f"{who} Adam: {iters} steps (from {how})")
            g_iters, d_iters = int(g_optim.iterations.numpy()), int(d_optim.iterations.numpy())
        else:
            notes.append("the checkpoint has no Adam slots: the optimizers start fresh")
    if unreadable:
        raise ConversionError(f"cannot read {len(unreadable)} variables of {prefix} "
                              f"(truncated or corrupt data file?):\n  " +
                              "\n  ".join(sorted(unreadable)))

    folder, written = _write(nets, config, step, g_optim, d_optim, force)
    return ConversionResult(config=config, folder=folder, checkpoint=written, step=step,
                            optimizer=state, g_iterations=g_iters, d_iterations=d_iters,
                            notes=notes)


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------

def convert_pytorch(checkpoint: str, dataset: str | None = None,
                    checkpoint_dir: str = "checkpoints", img_size: int | None = None,
                    force: bool = False, optimizer: bool = True, overrides: dict | None = None,
                    ignore_unknown: bool = False, log=print) -> ConversionResult:
    """Convert a checkpoint of the official PyTorch code (`torch.save` of the six
    state_dicts; read without torch, safely) into the pytorch variant."""
    try:
        state = torch_format.load(checkpoint)
    except torch_format.TorchFormatError as e:
        raise ConversionError(f"cannot read the PyTorch checkpoint {checkpoint}: {e}") from e
    if not isinstance(state, dict):
        raise ConversionError(f"{checkpoint} holds a {type(state).__name__}, not the dict of "
                              f"state_dicts {', '.join(TORCH_KEYS)}")
    bad = sorted(k for k, v in state.items() if k in TORCH_KEYS and not isinstance(v, dict))
    if bad:
        raise ConversionError(f"{checkpoint}: these entries are not state_dicts: "
                              f"{', '.join(map(str, bad))}")
    arch, notes = infer_torch_config(state, img_size)
    # the official code saves DATASET_params_%07d.pt and DATASET_params_latest.pt
    m = re.match(r"^(.+)_params_(\d+|latest)\.pt$", os.path.basename(checkpoint))
    dataset = dataset or (m.group(1) if m else None)
    if not dataset:
        raise ConversionError("pass --dataset NAME (the file name does not say it)")
    config = _make_config("pytorch", arch, dataset, checkpoint_dir, None, overrides, notes)
    from ugatit_tf.model.checkpoints import model_checkpoint_dir
    _check_destination(model_checkpoint_dir(config), force)
    step = int(m.group(2)) if m and m.group(2).isdigit() else 0

    from ugatit_tf.model.networks import Networks, torch_name_map
    nets = Networks(config, discriminators=True)
    maps = {}
    for model in nets.generators + nets.discriminators:
        maps.update(torch_name_map(model))
    _check_coverage(nets, list(maps.values()))
    entries = {f"{k}/{n}": e for k, sd in maps.items() for n, e in sd.items()}
    expected = {n: source_shape(e) for n, e in entries.items()}
    found = {}
    non_tensors = []
    for key, sd in state.items():
        if key not in TORCH_KEYS:
            found[str(key)] = ()  # an unknown top-level entry, listed as such
            continue
        for n, v in sd.items():
            full = f"{key}/{n}"
            if isinstance(v, np.ndarray):
                found[full] = v.shape
            else:
                non_tensors.append(f"  {full}: {type(v).__name__}")
    missing, unexpected, wrong = _problems(expected, found)
    bad_types = []
    for full in sorted(set(expected) & set(found)):
        key, name = full.split("/", 1)
        if not np.issubdtype(state[key][name].dtype, np.floating):
            bad_types.append(f"  {full}: dtype {state[key][name].dtype}, expected a float type")
    extra = []
    if non_tensors:
        extra += [f"not tensors ({len(non_tensors)}):"] + sorted(non_tensors)
    if bad_types:
        extra += [f"not floating point ({len(bad_types)}):"] + bad_types
    unexpected = _unknown_ignored(unexpected, ignore_unknown, notes)
    _raise_problems(checkpoint, config, missing, unexpected, wrong, extra)

    log(f"converting {len(entries)} variables from {checkpoint}")
    for full, entry in entries.items():
        key, name = full.split("/", 1)
        entry.variable.assign(to_ours(entry, state[key][name]).astype(entry.variable.dtype))
    del state
    g_optim = d_optim = None
    mode = "omitted"
    if optimizer:
        g_optim, d_optim = _new_optimizers(nets, config)
        mode = "fresh"
        notes.append("PyTorch checkpoints hold no optimizer state: the optimizers start fresh")
    folder, written = _write(nets, config, step, g_optim, d_optim, force)
    return ConversionResult(config=config, folder=folder, checkpoint=written, step=step,
                            optimizer=mode, notes=notes)


def convert(source: str, checkpoint: str, **kwargs) -> ConversionResult:
    """`convert_tf1` or `convert_pytorch` by `source` ('tf1' / 'pytorch')."""
    if source == "tf1":
        return convert_tf1(checkpoint, **kwargs)
    if source == "pytorch":
        return convert_pytorch(checkpoint, **kwargs)
    raise ConversionError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------

def synthetic_image(size: int) -> np.ndarray:
    """A deterministic test picture in [-1, 1], [1, size, size, 3]: colour gradients, a disc
    and stripes, so every part of the network sees structure."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.09).astype(np.float32)
    stripes = 0.5 * (1 + np.sin(2 * np.pi * 6 * (x + 0.5 * y)))
    img = np.stack([0.6 * x + 0.4 * disc, 0.5 * y + 0.3 * stripes, 1 - 0.7 * disc * x], -1)
    return (np.clip(img, 0, 1) * 2 - 1)[None].astype(np.float32)


def load_image(path: str, size: int) -> np.ndarray:
    import tensorflow as tf

    raw = tf.io.read_file(path)
    img = tf.image.decode_image(raw, channels=3, expand_animations=False)
    img = tf.image.resize(tf.cast(img, tf.float32), [size, size])
    return (img.numpy() / 127.5 - 1.0)[None].astype(np.float32)


def verify(config: Config, image: str | None = None, log=print) -> dict:
    """Reload the converted checkpoint with `checkpoints.load_networks`, run one image through
    both generators and report the output statistics and CAM logits."""
    from ugatit_tf.model.checkpoints import load_networks

    nets, prefix = load_networks(config, discriminators=False)
    x = load_image(image, config.img_size) if image else synthetic_image(config.img_size)
    log(f"verify: restored {prefix}")
    log(f"verify: config {main_flags(config)}")
    log(f"verify: input {'image ' + image if image else 'synthetic image'} "
        f"{list(x.shape)}")
    report = {"checkpoint": prefix}
    for key, model in (("A2B", nets.genA2B), ("B2A", nets.genB2A)):
        out, cam, heatmap = model(x, training=False)
        out, cam = out.numpy(), cam.numpy()
        stats = {"min": float(out.min()), "max": float(out.max()), "mean": float(out.mean()),
                 "std": float(out.std()), "cam_logits": [float(v) for v in cam[0]],
                 "finite": bool(np.isfinite(out).all())}
        report[key] = stats
        log(f"verify: {key} ({model.name}): output min {stats['min']:.4f} max "
            f"{stats['max']:.4f} mean {stats['mean']:.4f} std {stats['std']:.4f}; cam logits "
            f"[gap {stats['cam_logits'][0]:.4f}, gmp {stats['cam_logits'][1]:.4f}]")
        if not stats["finite"]:
            raise ConversionError(f"verify: {key} produced non-finite values")
    return report


# ---------------------------------------------------------------------------
# Command line (tools/convert_checkpoint.py)
# ---------------------------------------------------------------------------

def build_parser():
    import argparse

    from ugatit_tf.config import str2bool

    p = argparse.ArgumentParser(
        description="Convert a checkpoint of the original U-GAT-IT (TF1 or PyTorch) into a "
                    "checkpoint of this port, found by main.py with the printed flags.")
    p.add_argument("--source", required=True, choices=SOURCES,
                   help="tf1: the official TF1 code (released weights); pytorch: the official "
                        "PyTorch code")
    p.add_argument("--checkpoint", required=True,
                   help="tf1: checkpoint prefix (.../UGATIT.model-1000001) or its folder; "
                        "pytorch: the .pt file")
    p.add_argument("--dataset", default=None,
                   help="data set name (default: from the original folder / file name)")
    p.add_argument("--checkpoint_dir", default="checkpoints",
                   help="where to write checkpoint_dir/model_dir (default: checkpoints)")
    p.add_argument("--img_size", type=int, default=None,
                   help="image size; read from the weights for the full model, needed for the "
                        "light model (default 256)")
    naming = ("part of the checkpoint folder name, not visible in the weights (default: from "
              "the original folder name, else main.py's default)")
    p.add_argument("--gan_type", default=None, choices=GAN_TYPES, help=naming)
    p.add_argument("--n_critic", type=int, default=None, help=naming)
    for name in ("adv_weight", "cycle_weight", "identity_weight", "cam_weight"):
        p.add_argument(f"--{name}", type=_number, default=None, help=naming)
    p.add_argument("--smoothing", type=str2bool, default=None,
                   help="AdaLIN smoothing (not visible in the weights; default: folder name, "
                        "else True)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing non-empty checkpoint folder")
    p.add_argument("--ignore_unknown", action="store_true",
                   help="convert even if the checkpoint has variables the network does not "
                        "know (they are listed and dropped); missing or misshapen ones still "
                        "stop the conversion")
    p.add_argument("--no_optimizer", action="store_true",
                   help="leave the Adam state out (inference-only checkpoint, a third of the "
                        "size)")
    p.add_argument("--verify", action="store_true",
                   help="reload the result and run one image through both generators")
    p.add_argument("--verify_image", default=None,
                   help="image for --verify (default: a synthetic picture)")
    return p


def main(argv=None) -> int:
    import sys

    from ugatit_tf.model.checkpoints import CheckpointError

    args = build_parser().parse_args(argv)
    overrides = {n: getattr(args, n) for n in NAMING_FLAGS}
    try:
        result = convert(args.source, args.checkpoint, dataset=args.dataset,
                         checkpoint_dir=args.checkpoint_dir, img_size=args.img_size,
                         force=args.force, optimizer=not args.no_optimizer,
                         ignore_unknown=args.ignore_unknown,
                         overrides=overrides)
        for note in result.notes:
            print(f"note: {note}")
        print(f"wrote {result.checkpoint} (step {result.step}, optimizer state: "
              f"{result.optimizer})")
        if args.verify:
            verify(result.config, args.verify_image)
    except (ConversionError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    flags = result.flags
    print("use it with:")
    print(f"  python main.py --phase test {flags}")
    print(f"  python main.py --phase export {flags}")
    print(f"  python main.py --phase train {flags}   (fine-tuning; raise --epoch to go on)")
    return 0
