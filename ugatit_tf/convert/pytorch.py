"""Convert a checkpoint of the official PyTorch code (znxlwm/UGATIT-pytorch).

The file is a `torch.save` of {'genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB'}
state_dicts, read without torch and safely by `torch_format.load`, mapped through
`torch_name_map` into the pytorch variant and written by `writer.write_checkpoint`. The
architecture is read off the shapes (`infer_torch_config`); the data set and step come from
the official file name (`selfie2anime_params_0100000.pt`). PyTorch checkpoints hold no
optimizer state: the optimizers start fresh.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ugatit_tf.convert import torch_format
from ugatit_tf.convert.shared import (ConversionError, ConversionResult, check_coverage,
                                      count_names, infer_size, make_config, problems,
                                      raise_problems, shape_only_networks, source_shape,
                                      to_ours, unknown_ignored)
from ugatit_tf.convert.writer import Tensor, check_destination, write_checkpoint, zero_slots

__all__ = ["convert_pytorch", "infer_torch_config", "TORCH_KEYS"]

TORCH_KEYS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


def infer_torch_config(state: dict, img_size: int | None = None) -> tuple[dict, list]:
    """Architecture flags of an official PyTorch checkpoint dict: ({light, ch, n_res, n_dis,
    sn, img_size, img_ch}, notes)."""
    g = state.get("genA2B")
    if not isinstance(g, dict) or "DownBlock.1.weight" not in g:
        raise ConversionError("not a U-GAT-IT PyTorch checkpoint: it has no "
                              "genA2B['DownBlock.1.weight']")
    first = np.shape(g["DownBlock.1.weight"])
    if len(first) != 4:
        raise ConversionError(f"genA2B/DownBlock.1.weight has shape {list(first)}, expected "
                              f"[ch, 3, 7, 7]")
    ch, img_ch = int(first[0]), int(first[1])
    n_res = count_names("DownBlock.{}.conv_block.1.weight", g, start=12)
    fc = g.get("FC.0.weight")
    if fc is None or np.ndim(fc) != 2:
        raise ConversionError("not a U-GAT-IT PyTorch checkpoint: genA2B/FC.0.weight is "
                              "missing or not a matrix")
    light, size, note = infer_size(int(np.shape(fc)[1]), ch * 4, img_size,
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


def _load(checkpoint):
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
    return state


def _check(checkpoint, state, entries, config, ignore_unknown, notes):
    """Every name and shape accounted for, in one ConversionError (see shared)."""
    expected = {n: source_shape(e) for n, e in entries.items()}
    found, non_tensors = {}, []
    for key, sd in state.items():
        if key not in TORCH_KEYS:
            found[str(key)] = ()  # an unknown top-level entry, listed as such
            continue
        for n, v in sd.items():
            if isinstance(v, np.ndarray):
                found[f"{key}/{n}"] = v.shape
            else:
                non_tensors.append(f"  {key}/{n}: {type(v).__name__}")
    missing, unexpected, wrong = problems(expected, found)
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
    unexpected = unknown_ignored(unexpected, ignore_unknown, notes)
    raise_problems(checkpoint, config, missing, unexpected, wrong, extra)


def convert_pytorch(checkpoint: str, dataset: str | None = None,
                    checkpoint_dir: str = "checkpoints", img_size: int | None = None,
                    force: bool = False, optimizer: bool = True, overrides: dict | None = None,
                    ignore_unknown: bool = False, log=print) -> ConversionResult:
    """Convert a checkpoint of the official PyTorch code (`torch.save` of the six
    state_dicts; read without torch, safely) into the pytorch variant."""
    from ugatit_tf.model.checkpoints import model_checkpoint_dir
    from ugatit_tf.model.networks import torch_name_map

    state = _load(checkpoint)
    arch, notes = infer_torch_config(state, img_size)
    # the official code saves DATASET_params_%07d.pt and DATASET_params_latest.pt
    m = re.match(r"^(.+)_params_(\d+|latest)\.pt$", os.path.basename(checkpoint))
    dataset = dataset or (m.group(1) if m else None)
    if not dataset:
        raise ConversionError("pass --dataset NAME (the file name does not say it)")
    config = make_config("pytorch", arch, dataset, checkpoint_dir, None, overrides, notes)
    check_destination(model_checkpoint_dir(config), force)
    step = int(m.group(2)) if m and m.group(2).isdigit() else 0

    models = shape_only_networks(config)
    maps = {}
    for model in models:
        maps.update(torch_name_map(model))
    check_coverage(models, list(maps.values()))
    entries = {f"{k}/{n}": e for k, sd in maps.items() for n, e in sd.items()}
    _check(checkpoint, state, entries, config, ignore_unknown, notes)

    def reading(key, name, entry):
        return lambda: to_ours(entry, state[key][name])

    tensors = [Tensor(e.variable, reading(*full.split("/", 1), e))
               for full, e in entries.items()]
    iterations, mode = None, "omitted"
    if optimizer:
        tensors += zero_slots(e.variable for e in entries.values() if e.variable.trainable)
        iterations, mode = (0, 0), "fresh"
        notes.append("PyTorch checkpoints hold no optimizer state: the optimizers start fresh")
    log(f"converting {len(entries)} variables from {checkpoint}")
    folder, written = write_checkpoint(config, step, tensors, iterations, force,
                                       source=checkpoint)
    return ConversionResult(config=config, folder=folder, checkpoint=written, step=step,
                            optimizer=mode, notes=notes)
