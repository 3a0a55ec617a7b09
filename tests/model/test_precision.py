"""model/precision.py: --mixed_precision auto chooses bfloat16 only for the phases that
translate, on CPUs whose /proc/cpuinfo names a native bfloat16 unit, and never with TensorFlow's
oneDNN ops off; bad values are refused with a line naming the flag."""

import pytest

from ugatit_tf.config import ConfigError
from ugatit_tf.model import precision as precision_lib
from ugatit_tf.model.precision import bfloat16_cpu_flag, resolve_precision

# The shape of Linux's /proc/cpuinfo: one block per logical CPU, "key<TAB>: value" lines
CPUINFO = """processor\t: {n}
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse2 avx2 avx512f avx512bw {extra}
bugs\t\t: sysret_ss_attrs

"""


def cpuinfo(extra):
    return "".join(CPUINFO.format(n=n, extra=extra) for n in range(2))


@pytest.mark.parametrize("extra, flag", [
    ("avx512_vnni avx512_bf16", "avx512_bf16"),
    ("amx_tile amx_int8 amx_bf16 avx512_bf16", "amx_bf16"),  # AMX first: the faster unit
    ("avx512_vnni", ""),
    ("avx512_bf16x", ""),  # whole flags only
])
def test_bfloat16_cpu_flag_reads_the_flags_line(extra, flag):
    assert bfloat16_cpu_flag(cpuinfo(extra)) == flag


def test_bfloat16_cpu_flag_ignores_other_lines():
    assert bfloat16_cpu_flag("model name\t: avx512_bf16 amx_bf16\nflags\t\t: fpu sse2\n") == ""
    assert bfloat16_cpu_flag("") == ""


@pytest.mark.parametrize("phase, cpu_flag, precision", [
    ("test", "avx512_bf16", "mixed_bfloat16"),
    ("serve", "amx_bf16", "mixed_bfloat16"),
    ("test", "", "none"),
    ("serve", "", "none"),
    ("train", "amx_bf16", "none"),   # the original's float32 numbers
    ("eval", "amx_bf16", "none"),    # scores comparable across machines
    ("export", "amx_bf16", "none"),  # served on machines we do not know
])
def test_auto_follows_phase_and_cpu(monkeypatch, phase, cpu_flag, precision):
    monkeypatch.setattr(precision_lib, "native_bfloat16", lambda: cpu_flag)
    assert resolve_precision("auto", phase) == precision


@pytest.mark.parametrize("value", ["none", "mixed_float16", "mixed_bfloat16"])
def test_given_values_are_kept(monkeypatch, value):
    monkeypatch.setattr(precision_lib, "native_bfloat16", lambda: "amx_bf16")
    assert resolve_precision(value, "test") == resolve_precision(value, "train") == value


def test_auto_says_what_it_chose(monkeypatch):
    lines = []
    monkeypatch.setattr(precision_lib, "native_bfloat16", lambda: "amx_bf16")
    resolve_precision("auto", "test", lines.append)
    resolve_precision("mixed_bfloat16", "test", lines.append)  # given: nothing to say
    assert lines == [" [*] --mixed_precision auto: bfloat16, this CPU has amx_bf16 (faster; "
                     "pixels 0.3 of 255 levels from float32's on average); --mixed_precision "
                     "none for float32"]
    monkeypatch.setattr(precision_lib, "native_bfloat16", lambda: "")
    resolve_precision("auto", "test", lines.append)
    assert len(lines) == 1


def test_a_bad_value_names_the_flag():
    with pytest.raises(ConfigError) as e:
        resolve_precision("bfloat16", "test")
    assert str(e.value) == ("--mixed_precision must be one of auto, none, mixed_float16, "
                            "mixed_bfloat16; got 'bfloat16'")


def test_networks_are_never_built_under_unresolved_auto():
    """auto means a precision only for a phase: building networks under it is a caller's
    mistake, refused with the function to call (not the flag's message, which lists auto)."""
    with pytest.raises(ValueError, match=r"resolve it for the phase first "
                                         r"\(precision\.resolve_precision\)"):
        with precision_lib.precision_policy("auto"):
            pass


def test_native_bfloat16_is_off_without_onednn(monkeypatch):
    """With TF_ENABLE_ONEDNN_OPTS=0 bfloat16 runs on TensorFlow's slow fallback kernels."""
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert precision_lib.native_bfloat16.__wrapped__() == ""


def test_native_bfloat16_reads_this_machine(monkeypatch):
    """On Linux, the flag of this machine's /proc/cpuinfo; nothing where a GPU computes."""
    import tensorflow as tf
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            want = bfloat16_cpu_flag(f.read())
    except OSError:
        want = ""
    if tf.config.list_physical_devices("GPU"):
        want = ""
    assert precision_lib.native_bfloat16.__wrapped__() == want
