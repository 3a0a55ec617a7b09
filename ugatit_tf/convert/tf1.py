"""Convert a checkpoint of the official TF1 code (taki0112/UGATIT) into the tf1 variant.

E.g. the released selfie2anime weights `UGATIT.model-1000001.{index,data-*}`: read with
`tf.train.load_checkpoint` one variable at a time (no TF1 graph is built, nothing is held
twice), mapped through `tf1_name_map`, and written by `writer.write_checkpoint`. The
architecture is read off the shapes (`infer_tf1_config`); the flags that leave no trace in the
weights come from the original folder name when it has the original form. The step is the
TF1 counter in the file name (`UGATIT.model-1000001` -> 1000001), at which the trainer
resumes, as the original does. The Adam state comes along when present: slots `<var>/Adam`
(m) and `<var>/Adam_1` (v), and the step counts from the beta powers (`adam_iterations`);
docs/conversion.md explains the details.
"""

from __future__ import annotations

import math
import os
import re

from ugatit_tf.convert.shared import (ConversionError, ConversionResult, check_coverage,
                                      count_names, infer_size, make_config, parse_model_dir,
                                      problems, raise_problems, shape_only_networks,
                                      source_shape, step_from_name, to_ours, unknown_ignored)
from ugatit_tf.convert.writer import (Tensor, UnreadableTensor, check_destination,
                                      write_checkpoint, zero_slots)

__all__ = ["convert_tf1", "infer_tf1_config", "adam_iterations", "resolve_prefix"]

# float32 with flush-to-zero (TF's CPU kernels) underflows 0.999^t to 0 from this t on.
BETA2_UNDERFLOW_T = math.ceil(math.log(2.0 ** -126) / math.log(0.999))

# The beta powers of the original's two AdamOptimizers: G_optim is built first and gets the
# plain names, D_optim the uniquified ones.
POWERS = {"G": ("beta1_power", "beta2_power"), "D": ("beta1_power_1", "beta2_power_1")}


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
    n_res = count_names(g + "resblock_{}/res1/conv_0/conv2d/kernel", names)
    mlp = shapes.get(g + "MLP/linear_0/dense/kernel")
    if mlp is None or len(mlp) != 2:
        raise ConversionError("not a U-GAT-IT TF1 checkpoint: generator_B/MLP/linear_0/dense/"
                              "kernel is missing or not a matrix")
    light, size, note = infer_size(int(mlp[0]), ch * 4, img_size,
                                   "generator_B/MLP/linear_0/dense/kernel")
    d = "discriminator_A/global/"
    if d + "conv_0/kernel" in names or d + "conv_0/u" in names:
        sn, suffix = True, ""
    elif d + "conv_0/conv2d/kernel" in names:
        sn, suffix = False, "/conv2d"
    else:
        raise ConversionError("not a U-GAT-IT TF1 checkpoint: it has no "
                              "discriminator_A/global/conv_0 kernel")
    n_dis = count_names(d + "conv_{}" + suffix + "/kernel", names) + 1
    arch = dict(light=light, ch=ch, n_res=n_res, n_dis=n_dis, sn=sn, img_size=size,
                img_ch=img_ch)
    return arch, [note] if note else []


def adam_iterations(beta1_power: float | None, beta2_power: float | None,
                    counter_steps: int | None, beta1: float = 0.5,
                    beta2: float = 0.999) -> tuple[int, str]:
    """Keras `iterations` (steps done) of a TF1 Adam from its beta powers, with where the
    number came from. TF1 starts beta1_power at beta1 and multiplies it by beta1 after every
    step, so after n steps it holds 0.5^(n+1); once it has underflowed (after ~125-148 steps)
    the count comes from the checkpoint counter, else from beta2_power, else the first count
    at which float32 0.999^t underflows (from ~17,000 steps on the bias correction is exactly
    1 in float32, so the updates are the same). A power outside [0, 1] (or NaN) is damage:
    ConversionError naming it and --no_optimizer."""
    for name, power in (("beta1_power", beta1_power), ("beta2_power", beta2_power)):
        if power is not None and not 0.0 <= float(power) <= 1.0:
            raise ConversionError(f"the checkpoint's Adam {name} is {float(power)!r}, not in "
                                  f"[0, 1]: its optimizer state is damaged; convert the "
                                  f"weights alone with --no_optimizer")
    if beta1_power is not None and beta1_power > 0:
        t = round(math.log(float(beta1_power)) / math.log(beta1))
        return max(t - 1, 0), "beta1_power"
    if counter_steps is not None:
        return counter_steps, "checkpoint counter"
    if beta2_power is not None and beta2_power > 0:
        t = round(math.log(float(beta2_power)) / math.log(beta2))
        return max(t - 1, 0), "beta2_power (approximate)"
    return BETA2_UNDERFLOW_T, "lower bound (both beta powers underflowed)"


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def resolve_prefix(path: str) -> str:
    """The checkpoint prefix of `path`: a prefix, one of its files, or its folder (the
    state file's checkpoint, else the newest counter among the .index files)."""
    if os.path.isdir(path):
        prefix = _state_file_prefix(path)
        if prefix is not None:
            return prefix
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


def _state_file_prefix(folder: str) -> str | None:
    """The checkpoint the folder's `checkpoint` state file names, if it exists there. A state
    file naming paths on the authors' machine, or one that is not a text proto at all (a
    binary or non-UTF-8 file), counts as none."""
    import tensorflow as tf
    from google.protobuf import message

    try:
        return tf.train.latest_checkpoint(folder)
    except (UnicodeDecodeError, message.DecodeError, tf.errors.OpError, ValueError,
            OSError):
        return None


def _read_map(prefix):
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = {n: tuple(s) for n, s in reader.get_variable_to_shape_map().items()}
        dtypes = reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError, OSError, IndexError, RuntimeError,
            UnicodeDecodeError) as e:
        raise ConversionError(f"cannot read the TF1 checkpoint {prefix}: "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
    return reader, shapes, dtypes


def _reading(reader, name, entry=None):
    """Tensor.read for `name`: its value in our layout (TF1 layouts are ours), read alone,
    or UnreadableTensor."""
    import tensorflow as tf

    def read():
        try:
            value = reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:
            raise UnreadableTensor(f"{name}: {type(e).__name__}: "
                                   f"{str(e).strip().splitlines()[0][:200]}") from e
        return value if entry is None else to_ours(entry, value)
    return read


def _read_scalar(reader, prefix, name):
    try:
        return float(_reading(reader, name)())
    except UnreadableTensor as e:
        raise ConversionError(f"cannot read 1 variables of {prefix} (truncated or corrupt "
                              f"data file?):\n  {e}") from e


# ---------------------------------------------------------------------------
# Converting
# ---------------------------------------------------------------------------

def convert_tf1(checkpoint: str, dataset: str | None = None, checkpoint_dir: str = "checkpoints",
                img_size: int | None = None, force: bool = False, optimizer: bool = True,
                overrides: dict | None = None, ignore_unknown: bool = False,
                log=print) -> ConversionResult:
    """Convert a checkpoint of the official TF1 code (path prefix `.../UGATIT.model-N`, or its
    folder) into checkpoint_dir/model_dir. `overrides` sets naming flags (gan_type, n_critic,
    the loss weights, smoothing); None values are ignored."""
    from ugatit_tf.model.checkpoints import model_checkpoint_dir

    prefix = resolve_prefix(checkpoint)
    reader, shapes, dtypes = _read_map(prefix)
    config, notes = _config(prefix, shapes, dataset, checkpoint_dir, img_size, overrides)
    check_destination(model_checkpoint_dir(config), force)  # fail before the heavy work
    counter = step_from_name(prefix, r"-(\d+)$")

    entries, trainable = _name_map(config)
    with_adam = _check(prefix, config, shapes, dtypes, entries, trainable, optimizer,
                       ignore_unknown, notes)
    tensors = [Tensor(e.variable, _reading(reader, n, e)) for n, e in entries.items()]
    slots, state, iterations = _adam_state(reader, prefix, counter, config, entries, trainable,
                                           with_adam, optimizer, notes)

    log(f"converting {len(entries)} variables from {prefix}")
    folder, written = write_checkpoint(config, counter or 0, tensors + slots, iterations, force,
                                       source=prefix)
    g_iters, d_iters = iterations or (0, 0)
    return ConversionResult(config=config, folder=folder, checkpoint=written, step=counter or 0,
                            optimizer=state, g_iterations=g_iters, d_iterations=d_iters,
                            notes=notes)


def _config(prefix, shapes, dataset, checkpoint_dir, img_size, overrides):
    """The tf1 Config of the checkpoint (architecture from its shapes, naming flags and data
    set from its folder's name when it has the original form) and the notes so far."""
    arch, notes = infer_tf1_config(shapes, img_size)
    naming = parse_model_dir(os.path.dirname(os.path.abspath(prefix)))
    dataset = dataset or (naming or {}).get("dataset")
    if not dataset:
        raise ConversionError("pass --dataset NAME (the folder name of the checkpoint does not "
                              "say it)")
    config = make_config("tf1", arch, dataset, checkpoint_dir, naming, overrides, notes)
    return config, notes


def _name_map(config):
    """The TF1 names of the four networks' variables: ({name: entry}, {'G' / 'D': the
    trainable names of the generators / discriminators})."""
    from ugatit_tf.model.networks import tf1_name_map

    models = shape_only_networks(config)
    name_maps = [tf1_name_map(m) for m in models]
    check_coverage(models, name_maps)
    entries = {n: e for m in name_maps for n, e in m.items()}
    trainable = {who: [n for m in maps for n, e in m.items() if e.variable.trainable]
                 for who, maps in (("G", name_maps[:2]), ("D", name_maps[2:]))}
    return entries, trainable


def _check(prefix, config, shapes, dtypes, entries, trainable, optimizer, ignore_unknown,
           notes) -> bool:
    """Every name, shape and dtype accounted for, in one ConversionError (see shared);
    whether the checkpoint holds Adam state."""
    expected, ignore, with_adam = _expected(shapes, entries, trainable, optimizer)
    missing, unexpected, wrong = problems(expected, shapes, ignore)
    not_floating = _not_floating(set(expected) & set(shapes), dtypes)
    unexpected = unknown_ignored(unexpected, ignore_unknown, notes)
    raise_problems(prefix, config, missing, unexpected, wrong, not_floating)
    return with_adam


def _expected(shapes, entries, trainable, optimizer):
    """({name: shape} the checkpoint must hold, the names left alone, whether it holds Adam
    state): the Adam slots and beta powers are expected when it holds any of them and the
    optimizer is wanted, left alone when it is not."""
    expected = {n: source_shape(e) for n, e in entries.items()}
    adam = {n + slot: expected[n] for names in trainable.values() for n in names
            for slot in ("/Adam", "/Adam_1")}
    powers = {p: () for pair in POWERS.values() for p in pair}
    with_adam = bool(set(shapes) & (set(adam) | set(powers)))
    expected_all = {**expected, **adam, **powers} if with_adam and optimizer else expected
    ignore = (set(adam) | set(powers)) if not optimizer else ()
    return expected_all, ignore, with_adam


def _not_floating(names, dtypes):
    """The report's lines for those of `names` whose dtype is not a float type (none if
    all are)."""
    bad_types = sorted(f"{n}: dtype {dtypes[n].name}, expected a float type"
                       for n in names if not dtypes[n].is_floating)
    return ([f"not floating point ({len(bad_types)}):"] +
            [f"  {b}" for b in bad_types]) if bad_types else ()


def _adam_state(reader, prefix, counter, config, entries, trainable, with_adam, optimizer,
                notes):
    """The Adam slots to write, what became of the optimizer state ('omitted', 'fresh' or
    'converted') and the (G, D) iterations (None when omitted)."""
    if with_adam and not optimizer:
        notes.append("the checkpoint's Adam state is left out (no optimizer requested)")
    elif optimizer and not with_adam:
        slots = zero_slots(entries[n].variable for names in trainable.values()
                           for n in names)
        notes.append("the checkpoint has no Adam slots: the optimizers start fresh")
        return slots, "fresh", (0, 0)
    elif optimizer:
        slots = [Tensor(entries[n].variable, _reading(reader, n + suffix, entries[n]), slot)
                 for names in trainable.values() for n in names
                 for suffix, slot in (("/Adam", "m"), ("/Adam_1", "v"))]
        iterations = _iterations(reader, prefix, counter, config.n_critic, notes)
        return slots, "converted", iterations
    return [], "omitted", None


def _iterations(reader, prefix, counter, n_critic, notes) -> tuple[int, int]:
    """(G, D) Adam step counts: D steps = counter - 1, G steps = ceil((counter - 1) /
    n_critic), as in the original loop, unless the beta powers tell exactly."""
    steps = None if counter is None else max(counter - 1, 0)
    counted = {"G": None if steps is None else -(-steps // n_critic), "D": steps}
    out = {}
    for who, (b1, b2) in POWERS.items():
        out[who], how = adam_iterations(_read_scalar(reader, prefix, b1),
                                        _read_scalar(reader, prefix, b2),
                                        counted[who])
        notes.append(f"{who} Adam: {out[who]} steps (from {how})")
    return out["G"], out["D"]
