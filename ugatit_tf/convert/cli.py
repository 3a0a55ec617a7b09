"""The command line of tools/convert_checkpoint.py: convert, optionally verify, print flags.

`main` checks the paths it is given before TensorFlow is loaded; every refusal (a bad path, a
file that is not a checkpoint of the original, an existing destination without --force) is
printed as `error: ...` on stderr with exit status 2 and writes nothing. On success it prints
the main.py flags that find the result. `verify` reloads the written checkpoint and runs one
image through both generators.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ugatit_tf.config import GAN_TYPES, Config, str2bool
from ugatit_tf.convert.shared import (NAMING_FLAGS, SOURCES, ConversionError,
                                      ConversionResult, main_flags, number)

__all__ = ["convert", "verify", "synthetic_image", "build_parser", "main"]


def convert(source: str, checkpoint: str, **kwargs) -> ConversionResult:
    """`tf1.convert_tf1` or `pytorch.convert_pytorch` by `source` ('tf1' / 'pytorch')."""
    if source == "tf1":
        from ugatit_tf.convert.tf1 import convert_tf1
        return convert_tf1(checkpoint, **kwargs)
    if source == "pytorch":
        from ugatit_tf.convert.pytorch import convert_pytorch
        return convert_pytorch(checkpoint, **kwargs)
    raise ConversionError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")


def synthetic_image(size: int) -> np.ndarray:
    """A deterministic test picture in [-1, 1], [1, size, size, 3]: colour gradients, a disc
    and stripes, so every part of the network sees structure."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.09).astype(np.float32)
    stripes = 0.5 * (1 + np.sin(2 * np.pi * 6 * (x + 0.5 * y)))
    img = np.stack([0.6 * x + 0.4 * disc, 0.5 * y + 0.3 * stripes, 1 - 0.7 * disc * x], -1)
    return (np.clip(img, 0, 1) * 2 - 1)[None].astype(np.float32)


def verify(config: Config, image: str | None = None, log=print) -> dict:
    """Reload the converted checkpoint with `checkpoints.load_networks`, run one image (read
    and resized as the test phase does, or `synthetic_image`) through both generators and
    report the output statistics and CAM logits."""
    from ugatit_tf.data.pipeline import load_rgb, to_model_input
    from ugatit_tf.model.checkpoints import load_networks

    x = (to_model_input(load_rgb(image), config.img_size)[None] if image
         else synthetic_image(config.img_size))
    nets, prefix = load_networks(config, discriminators=False)
    log(f"verify: restored {prefix}")
    log(f"verify: config {main_flags(config)}")
    log(f"verify: input {'image ' + image if image else 'synthetic image'} {list(x.shape)}")
    report = {"checkpoint": prefix}
    for key, model in (("A2B", nets.genA2B), ("B2A", nets.genB2A)):
        out, cam, _ = model(x, training=False)
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


def build_parser():
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
        p.add_argument(f"--{name}", type=number, default=None, help=naming)
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
                   help="image for --verify, which it implies (default: a synthetic picture)")
    return p


def check_paths(args) -> None:
    """The given paths, checked for type before any work (ConversionError naming the flag)."""
    path = args.checkpoint
    if args.source == "pytorch":
        if not os.path.isfile(path):
            what = "is not a file" if os.path.exists(path) else "does not exist"
            raise ConversionError(f"--checkpoint {path} {what} (a .pt file is expected)")
    elif not (os.path.isdir(path) or os.path.isfile(path) or os.path.isfile(path + ".index")):
        raise ConversionError(f"--checkpoint {path}: no such TF1 checkpoint (neither a folder, "
                              f"a file, nor a prefix with {os.path.basename(path)}.index)")
    if args.verify_image is not None:
        _check_verify_image(args.verify_image)
    if os.path.exists(args.checkpoint_dir) and not os.path.isdir(args.checkpoint_dir):
        raise ConversionError(f"--checkpoint_dir {args.checkpoint_dir} exists and is not a "
                              f"folder")
    _check_creatable(args.checkpoint_dir, "--checkpoint_dir")


def _check_verify_image(path: str) -> None:
    """ConversionError naming --verify_image unless it is an image the test phase reads (it
    is read again after the conversion: a bad one must stop the run before it)."""
    from ugatit_tf.common.images import ImageRejected, load_rgb
    if not os.path.isfile(path):
        raise ConversionError(f"--verify_image {path} is not a file")
    try:
        load_rgb(path)
    except ImageRejected as e:
        raise ConversionError(f"--verify_image {e}") from None


def _check_creatable(path: str, flag: str) -> None:
    """ConversionError naming `flag` when `path` cannot be made: its nearest existing
    ancestor is a file, or a folder this user cannot write in."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConversionError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConversionError(f"{flag} {path}: cannot write in {parent}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {n: getattr(args, n) for n in NAMING_FLAGS}
    if args.verify_image is not None:  # an image to verify with asks for the verification
        args.verify = True
    try:
        check_paths(args)
    except ConversionError as e:
        return _refuse(e)
    from ugatit_tf.data.check import DataError
    from ugatit_tf.model.checkpoints import CheckpointError

    try:
        result = convert(args.source, args.checkpoint, dataset=args.dataset,
                         checkpoint_dir=args.checkpoint_dir, img_size=args.img_size,
                         force=args.force, optimizer=not args.no_optimizer,
                         ignore_unknown=args.ignore_unknown, overrides=overrides)
        for note in result.notes:
            print(f"note: {note}")
        print(f"wrote {result.checkpoint} (step {result.step}, optimizer state: "
              f"{result.optimizer})")
        if args.verify:
            verify(result.config, args.verify_image)
    except (ConversionError, CheckpointError, DataError) as e:
        return _refuse(e)
    flags = result.flags
    print("use it with:")
    print(f"  python main.py --phase test {flags}")
    print(f"  python main.py --phase export {flags}")
    print(f"  python main.py --phase train {flags}   (fine-tuning; raise --epoch to go on)")
    return 0


def _refuse(error) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2
