"""The Keras dtype policy of --mixed_precision, under which networks are built: training
(train/trainer.py) and the forward-only phases (test, photos, serve) alike. Weights stay
float32 variables in every policy; the policy sets the compute dtype of the activations.
`--mixed_precision auto` (the default) is float32 for training, evaluation and export, and
bfloat16 for the test phase and the web page on a CPU that computes bfloat16 natively
(`resolve_precision`; docs/speed.md, "Precision")."""

from __future__ import annotations

import contextlib
import functools
import os

import keras
import tensorflow as tf

from ugatit_tf.config import ConfigError

PRECISIONS = {"none": "float32", "mixed_float16": "mixed_float16",
              "mixed_bfloat16": "mixed_bfloat16"}
# The phases where `auto` chooses bfloat16 when the CPU computes it natively: they only
# translate, for a person who looks at the images (the demo model's pixels 0.3 of 255 levels
# from float32's on average, 99.9 % within 4; docs/speed.md, "Precision").
# Training keeps the original's float32 numbers; evaluation's scores and the exported
# SavedModel (served on machines we do not know) stay float32 too.
AUTO_BFLOAT16_PHASES = ("test", "serve")
# /proc/cpuinfo flags of CPUs whose oneDNN bfloat16 convolutions beat float32: AMX (about
# 4x, Intel Xeon since Sapphire Rapids) and AVX512_BF16 (about 2x at 256 px, AMD Zen 4).
BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def check_precision(mixed_precision: str) -> None:
    """ConfigError naming the flag unless `mixed_precision` is a --mixed_precision value."""
    if mixed_precision != "auto" and mixed_precision not in PRECISIONS:
        raise ConfigError(f"--mixed_precision must be one of auto, {', '.join(PRECISIONS)}; "
                          f"got {mixed_precision!r}")


def policy_name(mixed_precision: str) -> str:
    """The Keras policy of a --mixed_precision value other than auto, which a phase resolves
    first (`resolve_precision`)."""
    check_precision(mixed_precision)
    if mixed_precision == "auto":
        raise ValueError("--mixed_precision auto has no policy of its own: resolve it for the "
                         "phase first (precision.resolve_precision)")
    return PRECISIONS[mixed_precision]


def bfloat16_cpu_flag(cpuinfo: str) -> str:
    """The first of BFLOAT16_CPU_FLAGS among the flags of /proc/cpuinfo's text, else ""."""
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return next((flag for flag in BFLOAT16_CPU_FLAGS if flag in flags), "")


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> str:
    """The CPU flag that makes bfloat16 the faster precision here ("amx_bf16",
    "avx512_bf16"), or "" where there is none: no such flag, no /proc/cpuinfo (systems
    other than Linux), TensorFlow's oneDNN ops turned off (TF_ENABLE_ONEDNN_OPTS=0: bfloat16
    would run on slow fallback kernels) or a GPU in use (not measured there)."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip() == "0":
        return ""
    if tf.config.list_physical_devices("GPU"):
        return ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return bfloat16_cpu_flag(f.read())
    except OSError:
        return ""


def resolve_precision(mixed_precision: str, phase: str, log=None) -> str:
    """The --mixed_precision value a phase runs: a given value as it is; `auto` is
    "mixed_bfloat16" for AUTO_BFLOAT16_PHASES on a CPU with native bfloat16 (said through
    `log` when given), else "none"."""
    check_precision(mixed_precision)
    if mixed_precision != "auto":
        return mixed_precision
    flag = native_bfloat16() if phase in AUTO_BFLOAT16_PHASES else ""
    if not flag:
        return "none"
    if log:
        log(f" [*] --mixed_precision auto: bfloat16, this CPU has {flag} (faster; pixels "
            f"0.3 of 255 levels from float32's on average); --mixed_precision none for "
            f"float32")
    return "mixed_bfloat16"


@contextlib.contextmanager
def precision_policy(mixed_precision: str):
    """Build networks under the Keras dtype policy of --mixed_precision (the previous global
    policy comes back afterwards: layers keep the policy they were built with). "none"
    leaves the current policy as it is: float32, unless a caller chose another (the float64
    reference tests)."""
    name = policy_name(mixed_precision)
    if mixed_precision == "none":
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
