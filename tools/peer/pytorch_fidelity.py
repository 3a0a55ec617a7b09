#!/usr/bin/env python
"""Side-by-side training run of the official PyTorch U-GAT-IT and this port's pytorch variant.

Optional peer harness, never a requirement of the project: it needs a separate Python with
torch (e.g. a virtual environment with the CPU wheel) and a checkout of the official code
(github znxlwm/UGATIT-pytorch). See docs/variants-fidelity.md for the method and the figures.

    python tools/peer/pytorch_fidelity.py run --torch_python /work/torchenv/bin/python \
        --original /work/peer/UGATIT-pytorch --out /work/peer/fidelity

`run` builds the official networks with the official `build_model()` (seeded), saves their
initial state dicts, trains them with the official `UGATIT.train()` for --steps steps on one
fixed image per domain (its data loaders replaced by ones that yield the fixed tensors), once
with torch.backends.mkldnn on and once off; then converts the initial weights with
tools/convert_checkpoint.py's converter, trains ours the same steps on the same tensors, and
compares the printed losses and the weight change. The `official` sub-command is what runs
inside the torch Python (it imports neither TensorFlow nor this package).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET = "fidelity"
# the official main.py's defaults, except the small model (light, ch 8, 128 px) and the steps
OFFICIAL_ARGS = dict(light=True, dataset=DATASET, batch_size=1, decay_flag=True, lr=1e-4,
                     weight_decay=1e-4, adv_weight=1, cycle_weight=10, identity_weight=10,
                     cam_weight=1000, ch=8, n_res=4, n_dis=6, img_size=128, img_ch=3,
                     device="cpu", benchmark_flag=False, resume=False,
                     print_freq=10 ** 9, save_freq=10 ** 9)
LOSS_LINE = re.compile(r"\[\s*(\d+)/\s*\d+\].*d_loss: ([-0-9.eE+naninf]+), "
                       r"g_loss: ([-0-9.eE+naninf]+)")


def fixed_images(size: int):
    """One deterministic picture per domain, [1, size, size, 3] float32 in [-1, 1]."""
    import numpy as np

    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.09).astype(np.float64)
    stripes = 0.5 * (1 + np.sin(2 * np.pi * 6 * (x + 0.5 * y)))
    a = np.stack([0.6 * x + 0.4 * disc, 0.5 * y + 0.3 * stripes, 1 - 0.7 * disc * x], -1)
    rings = 0.5 * (1 + np.cos(2 * np.pi * 5 * np.hypot(x - 0.4, y - 0.6)))
    b = np.stack([rings, 1 - 0.8 * y, 0.3 + 0.5 * x * rings], -1)
    return [(np.clip(im, 0, 1) * 2 - 1)[None].astype(np.float32) for im in (a, b)]


# ---------------------------------------------------------------------------------------------
# The official side (runs in the torch Python)
# ---------------------------------------------------------------------------------------------

def _stub_unused_imports():
    """The official UGATIT.py imports torchvision.transforms (for data loaders we replace),
    utils.py imports cv2 and scipy.misc (for image files we do not write): stand-ins."""
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules.setdefault(name, m)
        return sys.modules[name]

    noop = type("Noop", (), {"__init__": lambda self, *a, **k: None,
                             "__call__": lambda self, x: x})
    transforms = module("torchvision.transforms", **{n: noop for n in (
        "Compose", "RandomHorizontalFlip", "Resize", "RandomCrop", "ToTensor", "Normalize")})
    module("torchvision", transforms=transforms)
    module("cv2")
    misc = module("scipy.misc")
    module("scipy", misc=misc)


class _FixedIterator:
    """Yields the same (image, label) forever, with the Python-2 style `.next()` the official
    loop calls."""

    def __init__(self, tensor):
        self.tensor = tensor

    def next(self):
        return self.tensor, 0

    __next__ = next


class _FixedLoader:
    def __init__(self, tensor):
        self.tensor = tensor

    def __iter__(self):
        return _FixedIterator(self.tensor)


def official(args) -> int:
    import numpy as np
    import torch

    sys.path.insert(0, args.original)
    _stub_unused_imports()
    import UGATIT as official_module

    official_module.ImageFolder = lambda root, transform=None: []
    official_module.DataLoader = lambda dataset, **kwargs: None
    os.makedirs(args.out, exist_ok=True)
    opts = dict(OFFICIAL_ARGS, result_dir=args.out, iteration=args.steps)
    torch.manual_seed(args.seed)
    gan = official_module.UGATIT(argparse.Namespace(**opts))
    gan.build_model()
    a, b = (torch.from_numpy(np.ascontiguousarray(im.transpose(0, 3, 1, 2)))
            for im in fixed_images(opts["img_size"]))
    gan.trainA_loader, gan.trainB_loader = _FixedLoader(a), _FixedLoader(b)
    gan.save(args.out, 0)
    captured = io.StringIO()
    with torch.backends.mkldnn.flags(enabled=args.mkldnn), \
            contextlib.redirect_stdout(captured):
        gan.train()
    gan.save(args.out, args.steps)
    losses = [[int(s), float(d), float(g)] for s, d, g in LOSS_LINE.findall(captured.getvalue())]
    with open(os.path.join(args.out, "losses.json"), "w") as f:
        json.dump({"losses": losses, "torch": torch.__version__, "mkldnn": args.mkldnn}, f)
    print(f"official ({'mkldnn' if args.mkldnn else 'no mkldnn'}): {len(losses)} steps, "
          f"step-1 d_loss {losses[0][1]:.8f}")
    return 0


# ---------------------------------------------------------------------------------------------
# Our side (runs in the project's Python)
# ---------------------------------------------------------------------------------------------

def _official_weights(path, nets):
    """{(torch key, state_dict name): array in our layout} of a torch.save'd checkpoint."""
    from ugatit_tf.convert import torch_format
    from ugatit_tf.convert.shared import to_ours
    from ugatit_tf.model.networks import torch_name_map

    state = torch_format.load(path)
    out = {}
    for model in nets.generators + nets.discriminators:
        for key, entries in torch_name_map(model).items():
            for name, entry in entries.items():
                out[(key, name)] = (entry, to_ours(entry, state[key][name]))
    return out


def ours(initial: str, out: str, steps: int, seed: int):
    """Convert the official initial weights, train our pytorch variant `steps` steps on the
    fixed images; returns (nets, losses [[step, d_loss, g_loss]])."""
    import dataclasses

    import tensorflow as tf

    from ugatit_tf.convert.pytorch import convert_pytorch
    from ugatit_tf.train.trainer import Trainer

    ckpt_dir = os.path.join(out, "checkpoints")
    result = convert_pytorch(initial, dataset=DATASET, checkpoint_dir=ckpt_dir, force=True,
                             log=lambda *a: None)
    config = dataclasses.replace(
        result.config, epoch=1, iteration=steps, decay_flag=True, seed=seed, img_size=128,
        augment_flag=False,
        print_freq=10 ** 9, save_freq=10 ** 9, log_dir=os.path.join(out, "logs"),
        sample_dir=os.path.join(out, "samples"))
    datasets = [tf.data.Dataset.from_tensors(im).repeat() for im in fixed_images(
        config.img_size)]
    trainer = Trainer(config, log=lambda *a: None, datasets=datasets)
    history = trainer.train(progress=False)["history"]
    losses = [[s, d, g] for s, d, g in zip(history["step"], history["Discriminator_loss"],
                                           history["Generator_loss"])]
    return trainer.nets, losses


def weight_change_deviation(start, end_ref, end_other):
    """Relative L2 deviation of the weight change over all trainable parameters:
    ||(other - start) - (ref - start)|| / ||ref - start|| (spectral-norm u, v excluded)."""
    import numpy as np

    num = den = 0.0
    for key, (entry, ref) in end_ref.items():
        if entry.layout == "flat":  # SN's u / v buffers
            continue
        s = start[key][1].astype(np.float64)
        d_ref = ref.astype(np.float64) - s
        d_other = np.asarray(end_other[key][1], np.float64) - s
        num += float(np.sum((d_other - d_ref) ** 2))
        den += float(np.sum(d_ref ** 2))
    return (num / den) ** 0.5


def rho_at_bounds(weights):
    """How many rho values sit exactly at 0 or 1 (the clipping's work)."""
    import numpy as np

    return int(sum(np.sum((value == 0) | (value == 1)) for (key, name), (_, value)
                   in weights.items() if name.endswith("rho")))


def _ours_as_dict(nets):
    from ugatit_tf.model.networks import torch_name_map

    out = {}
    for model in nets.generators + nets.discriminators:
        for key, entries in torch_name_map(model).items():
            for name, entry in entries.items():
                out[(key, name)] = (entry, entry.variable.numpy())
    return out


def run(args) -> int:
    for path, what in ((args.torch_python, "--torch_python"), (args.original, "--original")):
        if not os.path.exists(path):
            print(f"pytorch_fidelity: {what} {path} does not exist", file=sys.stderr)
            return 2
    if not os.path.exists(os.path.join(args.original, "UGATIT.py")):
        print(f"pytorch_fidelity: --original {args.original} holds no UGATIT.py",
              file=sys.stderr)
        return 2
    runs = {}
    for mkldnn in (True, False):
        folder = os.path.join(args.out, "official_" + ("mkldnn" if mkldnn else "plain"))
        if not (args.reuse and os.path.exists(os.path.join(folder, "losses.json"))):
            subprocess.run([args.torch_python, os.path.abspath(__file__), "official",
                            "--original", args.original, "--out", folder, "--steps",
                            str(args.steps), "--seed", str(args.seed), "--mkldnn", str(mkldnn)],
                           check=True)
        with open(os.path.join(folder, "losses.json")) as f:
            runs[mkldnn] = dict(folder=folder, **json.load(f))
    sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    name = f"{DATASET}_params_%07d.pt"
    initial = os.path.join(runs[True]["folder"], name % 0)
    nets, our_losses = ours(initial, os.path.join(args.out, "ours"), args.steps, args.seed)
    start = _official_weights(initial, nets)
    ref = _official_weights(os.path.join(runs[True]["folder"], name % args.steps), nets)
    plain = _official_weights(os.path.join(runs[False]["folder"], name % args.steps), nets)
    mine = _ours_as_dict(nets)
    report = {
        "steps": args.steps, "seed": args.seed, "torch": runs[True]["torch"],
        "official_spread": weight_change_deviation(start, ref, plain),
        "our_deviation": weight_change_deviation(start, ref, mine),
        "our_deviation_from_plain": weight_change_deviation(start, plain, mine),
        "rho_at_0_or_1": {"official": rho_at_bounds(ref), "official_plain": rho_at_bounds(plain),
                          "ours": rho_at_bounds(mine)},
        "losses": {"official_mkldnn": runs[True]["losses"],
                   "official_plain": runs[False]["losses"], "ours": our_losses},
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"{'step':>4} {'d official':>12} {'d plain':>12} {'d ours':>12} "
          f"{'g official':>12} {'g plain':>12} {'g ours':>12}")
    for (s, d1, g1), (_, d2, g2), (_, d3, g3) in zip(*report["losses"].values()):
        print(f"{s:>4} {d1:12.6f} {d2:12.6f} {d3:12.6f} {g1:12.5f} {g2:12.5f} {g3:12.5f}")
    print(f"weight change after {args.steps} steps, relative L2 deviation from the official "
          f"(mkldnn on): official mkldnn off {report['official_spread']:.3%}, ours "
          f"{report['our_deviation']:.3%} (from mkldnn off: "
          f"{report['our_deviation_from_plain']:.3%}); rho values clipped to 0 or 1: official "
          f"{report['rho_at_0_or_1']['official']} (mkldnn off "
          f"{report['rho_at_0_or_1']['official_plain']}), ours {report['rho_at_0_or_1']['ours']}")
    return 0


def _bool(text):
    if text not in ("True", "False"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text == "True"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="both sides and the comparison")
    r.add_argument("--torch_python", required=True, help="a Python that has torch")
    r.add_argument("--reuse", action="store_true",
                   help="keep the official runs already in --out (only ours is trained again)")
    o = sub.add_parser("official", help="the official side only (in the torch Python)")
    o.add_argument("--mkldnn", type=_bool, default=True)
    for q in (r, o):
        q.add_argument("--original", required=True, help="checkout of znxlwm/UGATIT-pytorch")
        q.add_argument("--out", required=True, help="folder for the weights and the report")
        q.add_argument("--steps", type=int, default=6)
        q.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return official(args) if args.command == "official" else run(args)


if __name__ == "__main__":
    sys.exit(main())
