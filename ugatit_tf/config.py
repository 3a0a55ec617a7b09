"""One configuration object for the whole program, with the original's flags and defaults.

`Config` holds every flag of the TF1 original's main.py (same names, same defaults) plus the
port's own (`variant`, `dataset_dir`, `seed`, ...). `build_parser()` turns it into argparse
flags written like the original (`--light True`), and `Config.validate()` rejects impossible
values with a message that names the flag, before any work is done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields

GAN_TYPES = ("lsgan", "gan", "hinge", "wgan-gp", "wgan-lp", "dragan")
VARIANTS = ("tf1", "pytorch")
PHASES = ("train", "test", "export", "eval", "check", "serve")


class ConfigError(ValueError):
    """A flag has an impossible value; the message names the flag."""


def str2bool(value) -> bool:
    """Parse the original's boolean flags (`--light True`). Unlike the original, which treats
    any substring of 'true' as true, anything but a clear yes/no is an error."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "t", "1", "yes", "y"):
        return True
    if text in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def _flag(default, help_text, *, choices=None, kind=None, group="original"):
    return field(default=default, metadata={"help": help_text, "choices": choices,
                                             "kind": kind, "group": group})


@dataclass
class Config:
    # ---- flags of the original main.py, same names and defaults ----
    phase: str = _flag("train", "[train / test / export / eval / check / serve]", choices=PHASES)
    light: bool = _flag(False, "[U-GAT-IT full version / U-GAT-IT light version]")
    dataset: str = _flag("selfie2anime", "dataset name (folder under --dataset_dir)")
    epoch: int = _flag(100, "The number of epochs to run")
    iteration: int = _flag(10000, "The number of training iterations per epoch")
    batch_size: int = _flag(1, "The size of batch size")
    print_freq: int = _flag(1000, "The number of image_print_freq")
    save_freq: int = _flag(1000, "The number of ckpt_save_freq")
    decay_flag: bool = _flag(True, "The decay_flag")
    decay_epoch: int = _flag(50, "decay epoch")
    lr: float = _flag(0.0001, "The learning rate")
    GP_ld: float = _flag(10, "The gradient penalty lambda")
    adv_weight: float = _flag(1, "Weight about GAN")
    cycle_weight: float = _flag(10, "Weight about Cycle")
    identity_weight: float = _flag(10, "Weight about Identity")
    cam_weight: float = _flag(1000, "Weight about CAM")
    gan_type: str = _flag("lsgan", "[gan / lsgan / wgan-gp / wgan-lp / dragan / hinge]",
                          choices=GAN_TYPES)
    smoothing: bool = _flag(True, "AdaLIN smoothing effect")
    ch: int = _flag(64, "base channel number per layer")
    n_res: int = _flag(4, "The number of resblock")
    n_dis: int = _flag(6, "The number of discriminator layer")
    n_critic: int = _flag(1, "The number of critic")
    sn: bool = _flag(True, "using spectral norm")
    img_size: int = _flag(256, "The size of image")
    img_ch: int = _flag(3, "The size of image channel")
    augment_flag: bool = _flag(True, "Image augmentation use or not")
    checkpoint_dir: str = _flag("checkpoints", "Directory name to save the checkpoints")
    result_dir: str = _flag("results", "Directory name to save the generated images")
    log_dir: str = _flag("logs", "Directory name to save training logs")
    sample_dir: str = _flag("samples", "Directory name to save the samples on training")

    # ---- the port's own flags ----
    variant: str = _flag("tf1", "network variant: tf1 (the official TF1 code, default) or "
                         "pytorch (the official PyTorch networks)", choices=VARIANTS,
                         group="port")
    dataset_dir: str = _flag("datasets", "folder holding the data sets (NAME/trainA, ...)",
                             group="port")
    seed: int = _flag(0, "random seed for weights, data order and augmentation", group="port")
    keep_checkpoints: int = _flag(3, "how many recent checkpoints to keep", group="port")
    deterministic: bool = _flag(False, "bitwise-reproducible training (seeds + TensorFlow op "
                                "determinism; slower)", group="port")

    # ---- scale and speed (issue 7) ----
    strategy: str = _flag("default", "train phase: default (one device), mirrored (all local "
                          "GPUs, else all logical CPUs) or multiworker (MultiWorkerMirrored"
                          "Strategy, cluster from TF_CONFIG); --batch_size is the GLOBAL batch",
                          choices=("default", "mirrored", "multiworker"), group="scale")
    mixed_precision: str = _flag("none", "train phase: Keras mixed precision policy: none "
                                 "(float32), mixed_float16 (with loss scaling) or "
                                 "mixed_bfloat16; norms, losses and spectral norm stay float32",
                                 choices=("none", "mixed_float16", "mixed_bfloat16"),
                                 group="scale")
    jit_compile: bool = _flag(False, "train phase: compile the D and G steps with XLA",
                              group="scale")

    # ---- test phase on your own photos / videos ----
    input: str = _flag("", "test phase: translate this file, folder, glob or video instead of "
                       "testA/testB", group="photos")
    output: str = _flag("", "test phase with --input: output folder (default "
                        "result_dir/model_dir/photos)", group="photos")
    direction: str = _flag("a2b", "test phase with --input: a2b or b2a", choices=("a2b", "b2a"),
                           group="photos")
    face_crop: bool = _flag(False, "with --input: detect, align and crop faces first",
                            group="photos")
    paste_back: bool = _flag(False, "with --face_crop: blend the translated face back into the "
                             "photo", group="photos")
    fallback: str = _flag("error", "with --face_crop, when no face is found: error or center",
                          choices=("error", "center"), group="photos")

    # ---- export ----
    export_dir: str = _flag("export", "export phase: output folder", group="export")
    export_format: str = _flag("saved_model", "export phase: saved_model, tflite or all",
                               choices=("saved_model", "tflite", "all"), group="export")
    quantize: str = _flag("none", "TFLite quantization: none, float16, dynamic, int8 or all",
                          choices=("none", "float16", "dynamic", "int8", "all"), group="export")
    version: int = _flag(1, "export phase: model version folder (TF Serving layout)",
                         group="export")
    max_bytes: int = _flag(10 * 1024 * 1024, "SavedModel bytes signatures: largest encoded "
                           "image accepted", group="export")
    max_pixels: int = _flag(4096 * 4096, "SavedModel bytes signatures: largest decoded image "
                            "(width x height x frames) accepted", group="export")
    max_batch: int = _flag(16, "SavedModel signatures: largest batch accepted", group="export")
    representative_dir: str = _flag("", "TFLite int8: calibration images (default: the data "
                                    "set's trainA / trainB)", group="export")

    # ---- evaluation ----
    inception_weights: str = _flag("imagenet", "eval phase: Inception-v3 weights (imagenet "
                                   "from the Keras cache, or a local .h5 file)", group="eval")
    eval_freq: int = _flag(0, "train phase: compute the evaluation scores every N iterations "
                           "(0: never)", group="eval")

    # ---- serve phase: the web page and TF Serving's REST API (issue 14) ----
    host: str = _flag("127.0.0.1", "serve phase: address to listen on (0.0.0.0: every "
                      "network interface)", group="serve")
    port: int = _flag(8000, "serve phase: port to listen on (0: any free port)", group="serve")
    serve_model_name: str = field(default="", metadata={
        "help": "serve phase: NAME in /v1/models/NAME (default: --dataset)", "choices": None,
        "group": "serve", "flag": "model_name"})
    serving_url: str = _flag("", "serve phase: use this TF Serving model instead of a local "
                             "one, e.g. http://host:8501/v1/models/NAME", group="serve")
    max_upload_bytes: int = _flag(10 * 1024 * 1024, "serve phase: largest photo accepted by "
                                  "the page, in bytes", group="serve")

    # ------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return "UGATIT_light" if self.light else "UGATIT"

    @property
    def model_dir(self) -> str:
        """The original's folder name, encoding the configuration. The pytorch variant gets a
        `_pytorch` suffix so the two variants never share (and never mix) checkpoints."""
        sn = "_sn" if self.sn else ""
        smoothing = "_smoothing" if self.smoothing else ""
        name = "{}_{}_{}_{}resblock_{}dis_{}_{}_{}_{}_{}{}{}".format(
            self.model_name, self.dataset, self.gan_type, self.n_res, self.n_dis,
            self.n_critic, _num(self.adv_weight), _num(self.cycle_weight),
            _num(self.identity_weight), _num(self.cam_weight), sn, smoothing)
        if self.variant != "tf1":
            name += "_" + self.variant
        return name

    @property
    def mlp_width(self) -> int:
        """Width of the AdaLIN parameter MLP: the bottleneck width ch*4. The TF1 code uses
        ch*n_res, which only works (and equals ch*4) when n_res == 4."""
        return self.ch * 4

    # ------------------------------------------------------------------
    def validate(self) -> "Config":
        """Raise ConfigError naming the flag for any impossible value."""
        for name in ("epoch", "iteration", "batch_size", "print_freq", "save_freq", "ch",
                     "n_critic", "keep_checkpoints", "version", "max_bytes", "max_pixels",
                     "max_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name} must be a whole number >= 1, got {value!r}")
        for name in ("n_res", "decay_epoch", "eval_freq"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{name} must be a whole number >= 0, got {value!r}")
        for name in ("lr", "GP_ld", "adv_weight", "cycle_weight", "identity_weight",
                     "cam_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"--{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= 2**32 - 2:
            raise ConfigError(f"--seed must be a whole number from 0 to {2**32 - 2} (domain B "
                              f"uses seed + 1), got {self.seed!r}")
        if not self.dataset or self.dataset in (".", "..") or "/" in self.dataset or (
                os.sep in self.dataset):
            raise ConfigError(f"--dataset must be a folder name under --dataset_dir (it also "
                              f"names the checkpoint folder), not a path; got "
                              f"{self.dataset!r}: use --dataset_dir for the parent folder")
        if self.gan_type not in GAN_TYPES:
            raise ConfigError(f"--gan_type must be one of {', '.join(GAN_TYPES)}; "
                              f"got {self.gan_type!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"--variant must be one of {', '.join(VARIANTS)}; "
                              f"got {self.variant!r}")
        if self.phase not in PHASES:
            raise ConfigError(f"--phase must be one of {', '.join(PHASES)}; got {self.phase!r}")
        for f in fields(self):  # the other fields with a fixed set of values
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"--{f.name} must be one of {', '.join(choices)}; "
                                  f"got {getattr(self, f.name)!r}")
        if self.img_ch != 3:
            raise ConfigError(f"--img_ch must be 3 (RGB; the original's generators always "
                              f"output 3 channels), got {self.img_ch!r}")
        if self.n_dis < 4:
            raise ConfigError(f"--n_dis must be >= 4 (the local discriminator has n_dis-3 "
                              f"downsampling layers), got {self.n_dis!r}")
        if not isinstance(self.img_size, int) or self.img_size < 8 or self.img_size % 4:
            raise ConfigError(f"--img_size must be a multiple of 4 and at least 8 (the "
                              f"generator downsamples twice), got {self.img_size!r}")
        problem = discriminator_size_problem(self.img_size, self.n_dis, self.variant)
        if problem:
            smallest = min_img_size(self.n_dis, self.variant)
            raise ConfigError(
                f"--img_size {self.img_size} is too small for --n_dis {self.n_dis}: {problem}. "
                f"Use --img_size >= {smallest} or a smaller --n_dis.")
        return self

    # ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    # The flags that define the networks and training: a checkpoint may only be resumed or
    # used with the same values.
    ARCHITECTURE_FLAGS = ("variant", "light", "ch", "n_res", "n_dis", "sn", "smoothing",
                          "img_ch")

    def architecture_mismatch(self, saved: dict) -> list[str]:
        """Names of architecture flags whose value differs from a saved config dict."""
        names = list(self.ARCHITECTURE_FLAGS)
        if not self.light:  # the full model's MLP depends on the image size
            names.append("img_size")
        return [n for n in names if n in saved and saved[n] != getattr(self, n)]


def _num(value):
    """Format weights like the original (ints stay ints: `_1_10_10_1000`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------
# Discriminator size arithmetic (shared by validation and the networks)
# ---------------------------------------------------------------------------

def conv_pads(kernel: int, stride: int, pad: int, variant: str) -> tuple[int, int]:
    """Padding (before, after) of the original's padded convolutions.

    TF1 (ops.py `conv`): symmetric when (kernel - stride) is even, otherwise `pad` before and
    `kernel - stride - pad` after (k3 s2 p1 -> (1, 0); k4 s1 p1 -> (1, 2)). PyTorch's
    ReflectionPad2d(pad) is always symmetric."""
    if pad <= 0:
        return 0, 0
    if variant == "pytorch" or (kernel - stride) % 2 == 0:
        return pad, pad
    return pad, kernel - stride - pad


def discriminator_layer_counts(n_dis: int) -> dict[str, int]:
    """Number of stride-2 4x4 convolutions of each discriminator head."""
    return {"global": n_dis - 1, "local": n_dis - 3}


def discriminator_map_sizes(img_size: int, n_dis: int, variant: str) -> dict[str, list[int]]:
    """Spatial sizes entering each 4x4 convolution of both heads, plus the final logit size."""
    out = {}
    for head, n_down in discriminator_layer_counts(n_dis).items():
        size, sizes = img_size, []
        for _ in range(n_down):
            sizes.append(size)
            before, after = conv_pads(4, 2, 1, variant)
            size = (size + before + after - 4) // 2 + 1
        for _ in range(2):  # conv_last and D_logit: 4x4 stride 1
            sizes.append(size)
            before, after = conv_pads(4, 1, 1, variant)
            size = size + before + after - 4 + 1
        sizes.append(size)
        out[head] = sizes
    return out


def discriminator_size_problem(img_size: int, n_dis: int, variant: str) -> str | None:
    for head, sizes in discriminator_map_sizes(img_size, n_dis, variant).items():
        *inputs, final = sizes
        for i, size in enumerate(inputs):
            stride = 2 if i < len(inputs) - 2 else 1
            before, after = conv_pads(4, stride, 1, variant)
            if size <= max(before, after):
                return (f"the {head} discriminator's feature map shrinks to {size}x{size} "
                        f"before a 4x4 convolution that reflect-pads {max(before, after)}")
        if final < 1:
            return f"the {head} discriminator's output map would be empty"
    return None


def min_img_size(n_dis: int, variant: str) -> int:
    size = 8
    while discriminator_size_problem(size, n_dis, variant):
        size += 4
    return size


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per Config field, typed like the original (`--light True`)."""
    for f in fields(Config):
        meta = f.metadata
        default = f.default
        if isinstance(default, bool):
            kind = str2bool
        elif isinstance(default, float):
            kind = float
        elif isinstance(default, int):
            kind = int
        else:
            kind = str
        parser.add_argument(f"--{meta.get('flag', f.name)}", dest=f.name, type=kind,
                            default=default,
                            choices=meta.get("choices"), help=meta.get("help"))


def config_from_args(args: argparse.Namespace) -> Config:
    values = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    return Config(**values)
