"""One configuration object for the whole program, with the original's flags and defaults.

`Config` holds every flag of the TF1 original's main.py (same names, same defaults) plus the
port's own (`variant`, `dataset_dir`, `seed`, ...). `build_parser()` turns it into argparse
flags written like the original (`--light True`), and `Config.validate()` rejects impossible
values with a message that names the flag, before any work is done.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def _flag(default, help_text, *, choices=None, group="original", flag=None):
    """A Config field that is also a command-line flag; `group` is its --help section, `flag`
    the flag's name where it differs from the field's."""
    metadata = {"help": help_text, "choices": choices, "group": group}
    if flag:
        metadata["flag"] = flag
    return field(default=default, metadata=metadata)


# --help sections, in order: (group key, title)
HELP_GROUPS = (
    ("original", "the original's flags (same names and defaults as taki0112/UGATIT)"),
    ("model", "model and checkpoint"),
    ("training", "training"),
    ("data", "data"),
    ("output", "output folders and console"),
    ("export", "export phase (SavedModel, TFLite)"),
    ("photos", "test phase on your own photos and videos (--input)"),
    ("eval", "evaluation"),
    ("speed", "speed, precision and scale"),
    ("serve", "web page (--phase serve)"),
)


@dataclass
class Config:
    # ---- flags of the original main.py, same names and defaults ----
    phase: str = _flag("train", "what to do: train, test (translate testA/testB or --input), "
                       "export, eval (scores), check (scan the data set) or serve (the web page)",
                       choices=PHASES)
    light: bool = _flag(False, "True: the light model (AdaLIN parameters from pooled "
                        "features, fits a laptop); False: the full model of the paper")
    dataset: str = _flag("selfie2anime", "data set name: the folder under --dataset_dir "
                         "holding trainA, trainB, testA, testB")
    epoch: int = _flag(100, "number of epochs to train")
    iteration: int = _flag(10000, "training iterations per epoch")
    batch_size: int = _flag(1, "images per training step (per domain)")
    print_freq: int = _flag(1000, "write a sample sheet every N iterations")
    save_freq: int = _flag(1000, "write a checkpoint every N iterations")
    decay_flag: bool = _flag(True, "decay the learning rate linearly to 0 after --decay_epoch")
    decay_epoch: int = _flag(50, "epoch where the learning-rate decay starts")
    lr: float = _flag(0.0001, "Adam learning rate")
    GP_ld: float = _flag(10, "gradient-penalty weight (wgan-gp, wgan-lp, dragan)")
    adv_weight: float = _flag(1, "weight of the adversarial (GAN) loss")
    cycle_weight: float = _flag(10, "weight of the cycle-consistency loss")
    identity_weight: float = _flag(10, "weight of the identity loss")
    cam_weight: float = _flag(1000, "weight of the CAM (attention) loss")
    gan_type: str = _flag("lsgan", "adversarial loss", choices=GAN_TYPES)
    smoothing: bool = _flag(True, "AdaLIN smoothing (rho - 0.1 in the forward pass)")
    ch: int = _flag(64, "base number of channels")
    n_res: int = _flag(4, "number of residual blocks")
    n_dis: int = _flag(6, "number of discriminator layers")
    n_critic: int = _flag(1, "discriminator updates per generator update")
    sn: bool = _flag(True, "spectral normalisation in the discriminators")
    img_size: int = _flag(256, "image size in pixels (square)")
    img_ch: int = _flag(3, "image channels (must be 3)")
    augment_flag: bool = _flag(True, "training augmentation (resize up, random crop, flip)")
    checkpoint_dir: str = _flag("checkpoints", "folder of the checkpoints", group="output")
    result_dir: str = _flag("results", "folder of the test and eval results", group="output")
    log_dir: str = _flag("logs", "folder of the TensorBoard logs", group="output")
    sample_dir: str = _flag("samples", "folder of the training sample sheets", group="output")

    # ---- the port's own flags ----
    variant: str = _flag("tf1", "network variant: tf1 (the official TF1 code) or pytorch (the "
                         "official PyTorch networks)", choices=VARIANTS, group="model")
    checkpoint: str = _flag("", "test, eval, export: use this checkpoint (its folder, a ckpt-N "
                            "prefix or a converted release); the architecture flags, --img_size "
                            "and --variant come from its config.json", group="model")
    dataset_dir: str = _flag("datasets", "folder holding the data sets (NAME/trainA, ...)",
                             group="data")
    seed: int = _flag(0, "random seed for weights, data order and augmentation",
                      group="training")
    keep_checkpoints: int = _flag(3, "how many recent checkpoints to keep", group="training")
    deterministic: bool = _flag(False, "bitwise-reproducible training (seeds + TensorFlow op "
                                "determinism; slower)", group="training")
    verbose: bool = _flag(False, "show TensorFlow's start-up and C++ log lines",
                          group="output")

    # ---- scale and speed (issue 7) ----
    strategy: str = _flag("default", "default (one device), mirrored (all local GPUs, else all "
                          "logical CPUs) or multiworker (MultiWorkerMirroredStrategy, cluster "
                          "from TF_CONFIG); --batch_size is the GLOBAL batch",
                          choices=("default", "mirrored", "multiworker"), group="speed")
    mixed_precision: str = _flag("auto", "Keras mixed precision policy: none (float32), "
                                 "mixed_float16 (with loss scaling), mixed_bfloat16 or auto; "
                                 "norms, losses and spectral norm stay float32; test, "
                                 "photos, serve and the exported SavedModel run the "
                                 "generators in it too (mixed_bfloat16: about 2x faster at "
                                 "256 px on CPUs with AVX512_BF16, 4x with AMX; pixels 0.3 "
                                 "of 255 levels from float32's on average). auto: "
                                 "mixed_bfloat16 for test and serve on such CPUs, none "
                                 "(float32) otherwise and always for train, eval and export",
                                 choices=("auto", "none", "mixed_float16", "mixed_bfloat16"),
                                 group="speed")
    jit_compile: bool = _flag(False, "compile the D and G steps with XLA", group="speed")
    low_memory: bool = _flag(False, "less resident memory, slower: TensorFlow's oneDNN "
                             "memory pool off and freed blocks returned to the system "
                             "(the same numbers; full model 256 px training about 11.1 "
                             "GiB instead of 13.7, about 28%% slower)", group="speed")
    train_kernels: str = _flag("reference", "how training computes: reference (the ops "
                               "that give the original's float32 numbers) or fast (the same "
                               "formulas through faster ops, other float rounding: instance "
                               "norms through oneDNN's fused batch-norm kernel and its "
                               "gradient, the global discriminator's last two convolutions "
                               "as matrix products; as accurate, measured against "
                               "float64; light model 128 px: 8%% faster in float32, 15%% in "
                               "mixed_bfloat16, 256 px mixed_bfloat16 20%%)",
                               choices=("reference", "fast"), group="speed")
    kernels: str = _flag("auto", "generator kernels when only translating (test, photos, "
                         "eval, export, serve): inference (normalisations through oneDNN's "
                         "fused batch-norm kernel, ReLU fused; the same values up to float "
                         "rounding, ~2e-6), frozen (inference with the convolutions' weights "
                         "folded into the graph: the same bits, about 1/6 faster one image "
                         "at a time, about 600 MiB more memory per direction), reference "
                         "(the ops training always uses) or auto (frozen for test and "
                         "photos, inference for the batched calls of serve, export and eval)",
                         choices=("auto", "frozen", "inference", "reference"), group="speed")

    # ---- test phase on your own photos / videos ----
    input: str = _flag("", "translate this file, folder, glob or video instead of "
                       "testA/testB", group="photos")
    output: str = _flag("", "output folder (default: result_dir/model_dir/photos)",
                        group="photos")
    direction: str = _flag("a2b", "a2b or b2a", choices=("a2b", "b2a"), group="photos")
    face_crop: bool = _flag(False, "detect, align and crop faces first", group="photos")
    paste_back: bool = _flag(False, "with --face_crop: blend the translated face back into "
                             "the photo", group="photos")
    fallback: str = _flag("error", "with --face_crop, when no face is found: error or center",
                          choices=("error", "center"), group="photos")

    # ---- export ----
    export_dir: str = _flag("export", "output folder", group="export")
    export_format: str = _flag("saved_model", "saved_model, tflite or all",
                               choices=("saved_model", "tflite", "all"), group="export")
    quantize: str = _flag("none", "TFLite quantization: none, float16, dynamic, int8 or all",
                          choices=("none", "float16", "dynamic", "int8", "all"), group="export")
    version: int = _flag(1, "model version folder (TF Serving layout)", group="export")
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
    serve_model_name: str = _flag("", "serve and export phases: NAME in /v1/models/NAME and "
                                  "in the export's folders (default: --dataset)",
                                  group="serve", flag="model_name")
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
        self._check_numbers()
        self._check_seed_and_dataset()
        self._check_choices()
        self._check_image_shape()
        return self

    def _check_numbers(self) -> None:
        """Refuse counts below 1 or 0 and weights or rates that are not finite and >= 0."""
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

    def _check_seed_and_dataset(self) -> None:
        """Refuse a seed outside 0..2**32-2 and a --dataset that is a path."""
        if not isinstance(self.seed, int) or not 0 <= self.seed <= 2**32 - 2:
            raise ConfigError(f"--seed must be a whole number from 0 to {2**32 - 2} (domain B "
                              f"uses seed + 1), got {self.seed!r}")
        if not self.dataset or self.dataset in (".", "..") or "/" in self.dataset or (
                os.sep in self.dataset):
            raise ConfigError(f"--dataset must be a folder name under --dataset_dir (it also "
                              f"names the checkpoint folder), not a path; got "
                              f"{self.dataset!r}: use --dataset_dir for the parent folder")

    def _check_choices(self) -> None:
        """Refuse a value outside its flag's fixed set of choices."""
        for f in fields(self):  # the fields with a fixed set of values
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"--{f.name} must be one of {', '.join(choices)}; "
                                  f"got {getattr(self, f.name)!r}")

    def _check_image_shape(self) -> None:
        """Refuse channels other than 3 and an image size the networks cannot take."""
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

    # ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

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
    """The smallest --img_size (a multiple of 4, at least 8) the discriminators of `n_dis`
    layers can take: doubled until one fits, then bisected (larger images always fit, and the
    size needed doubles with each layer: a step-by-step search never ended for --n_dis 40)."""
    low, high = 4, 8  # low never fits (below the minimum), high is tried first
    while discriminator_size_problem(high, n_dis, variant):
        low, high = high, high * 2
    while high - low > 4:
        middle = (low + high) // 8 * 4
        if discriminator_size_problem(middle, n_dis, variant):
            low = middle
        else:
            high = middle
    return high


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _flag_type(default):
    if isinstance(default, bool):
        return str2bool
    if isinstance(default, float):
        return float
    return int if isinstance(default, int) else str


def _metavar(name: str, default) -> str:
    if isinstance(default, bool):
        return "BOOL"
    if isinstance(default, (int, float)):
        return "N"
    return "NAME" if name in ("dataset", "serve_model_name") else "PATH"


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per Config field, typed like the original (`--light True`), in the --help
    sections of HELP_GROUPS. Defaults are SUPPRESSed so that the parsed namespace holds only
    the flags given on the command line (see `config_from_args`)."""
    sections = {key: parser.add_argument_group(title) for key, title in HELP_GROUPS}
    for f in fields(Config):
        shown = f" (default: {f.default})" if f.default != "" else ""
        choices = f.metadata.get("choices")
        metavar = "{" + ",".join(choices) + "}" if choices else _metavar(f.name, f.default)
        sections[f.metadata["group"]].add_argument(  # metadata "flag": another flag name
            f"--{f.metadata.get('flag', f.name)}", dest=f.name, type=_flag_type(f.default),
            default=argparse.SUPPRESS,
            choices=choices, metavar=metavar, help=f.metadata["help"] + shown)


def given_flags(args: argparse.Namespace) -> frozenset:
    """The names of the Config flags given on the command line (the others are SUPPRESSed)."""
    return frozenset(f.name for f in fields(Config) if hasattr(args, f.name))


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config of parsed flags: the given ones, the defaults for the rest."""
    return Config(**{name: getattr(args, name) for name in given_flags(args)})
