"""TFLite export: one generator per .tflite file, with the pixel scaling inside the model.

`export_tflite(generator, config, path, quantize)` traces the generator at a fixed size
[1, img_size, img_size, 3] with its TFLite-friendly upsampling (`Generator.call(...,
upsample="repeat")`), converts it with TFLite builtin ops only (an export that would need Flex
ops or lost its weights fails with ExportError naming the ops), checks that the result gives
finite outputs and writes it atomically. Quantizations: float32, float16, dynamic (int8
weights) and int8 (int8 weights and activations, calibrated on representative images: RGB
arrays such as the data set's images). I/O is uint8 RGB (or float [-1, 1] with float_io=True)
plus the CAM heatmap; `run_tflite` runs a file. Details and measurements: docs/serving.md.
"""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf

from ugatit_tf.common.files import write_bytes_atomic
from ugatit_tf.common.images import to_uint8 as images_to_uint8
from ugatit_tf.config import Config
from ugatit_tf.export.pixels import from_uint8, model_variables, resize_uint8, to_uint8
from ugatit_tf.export.saved_model import ExportError
from ugatit_tf.model.layers import TFLITE_KERNELS

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
QUANTIZE_CHOICES = ("none",) + QUANTIZATIONS + ("all",)
DEFAULT_REPRESENTATIVE_COUNT = 100          # int8 calibration images per direction

# A flatbuffer cannot exceed 2 GiB; keep a margin for the graph and metadata.
FLATBUFFER_LIMIT = 2 ** 31
FLATBUFFER_MARGIN = 64 * 2 ** 20
BYTES_PER_PARAM = {"float32": 4, "float16": 2, "dynamic": 1, "int8": 1}

# Ops that mean the model is not self-contained TFLite builtins: weights left as resource
# variables (the Keras model's variables were not tracked) or custom / Flex ops.
_NOT_BUILTIN = {"CUSTOM", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE",
                "DELEGATE"}


class _TFLiteModule(tf.Module):
    """The generator at a fixed size with the pixel scaling inside.

    uint8 I/O: uint8 RGB in, x / 127.5 - 1, generator, ((y + 1) / 2 * 255) rounded and
    clipped, uint8 out. For int8 the two scalings are written as one multiply-add each and
    pinned to the exact pixel grid with fake-quant ops (range [0, 255], scale 1), so the int8
    graph's first and last tensors hold pixel values exactly: otherwise the calibrator gives
    the intermediate (y + 1) / 2 a range of [0, 255] and the output collapses to a few
    levels (PSNR ~10 dB)."""

    def __init__(self, generator, size, float_io, int8=False):
        super().__init__(name="ugatit_tflite")
        self.weights = model_variables(generator)
        dtype = tf.float32 if float_io else tf.uint8
        name = "images" if float_io else "image"

        def fn(image):
            if float_io:
                x = image
            elif int8:
                x = tf.quantization.fake_quant_with_min_max_args(
                    tf.cast(image, tf.float32), 0.0, 255.0, num_bits=8)
                x = x * (1.0 / 127.5) - 1.0
            else:
                x = from_uint8(image)
            y, _, heatmap = generator(x, training=False, upsample="repeat",
                                        kernels=TFLITE_KERNELS)
            y = tf.cast(y, tf.float32)
            if float_io:
                out = y
            elif int8:
                out = tf.quantization.fake_quant_with_min_max_args(
                    y * 127.5 + 127.5, 0.0, 255.0, num_bits=8)
                out = tf.cast(out, tf.uint8)  # exact: fake-quant leaves whole numbers
            else:
                out = to_uint8(y)
            return {"image": out, "heatmap": tf.cast(heatmap, tf.float32)}

        self.serve = tf.function(fn, input_signature=[tf.TensorSpec([1, size, size, 3], dtype,
                                                                    name=name)])


def normalize_quantization(quantize: str) -> str:
    q = {"none": "float32", "fp32": "float32", "fp16": "float16"}.get(quantize, quantize)
    if q not in QUANTIZATIONS:
        raise ExportError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}; "
                          f"got {quantize!r}")
    return q


def quantizations_for(quantize: str) -> list[str]:
    """--quantize (one name or 'all') -> the list of quantizations to export."""
    if quantize == "all":
        return list(QUANTIZATIONS)
    return [normalize_quantization(quantize)]


def estimate_tflite_bytes(generator, quantize: str) -> int:
    params = sum(int(np.prod(v.shape)) for v in generator.variables)
    return params * BYTES_PER_PARAM[normalize_quantization(quantize)]


def representative_arrays(images, size, float_io, limit=DEFAULT_REPRESENTATIVE_COUNT):
    """Turn representative images (RGB arrays of any size, [h, w, 3] or [1, h, w, 3]; uint8
    pixels, or float in [-1, 1]) into the model's input: [1, size, size, 3] uint8 or float."""
    if callable(images):
        images = images()
    out = []
    for image in images:
        if len(out) >= limit:
            break
        a = np.asarray(image)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ExportError(f"representative images must be RGB [h, w, 3] arrays, got shape "
                              f"{np.asarray(image).shape}")
        if a.dtype != np.uint8:
            a = images_to_uint8(a)
        pixels = resize_uint8(tf.constant(a), size)[None]
        out.append(from_uint8(pixels).numpy() if float_io else pixels.numpy())
    if not out:
        raise ExportError("int8 quantization needs representative images, and none were "
                          "given (the data set's trainA/trainB or --representative_dir)")
    return out


def tflite_ops(model) -> list[str]:
    """Names of the ops of a TFLite model (a path or the flatbuffer bytes), as the
    interpreter without delegates sees them."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    kwargs = {"model_path": model} if isinstance(model, str) else {"model_content": model}
    interpreter = Interpreter(
        **kwargs, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return [d["op_name"] for d in interpreter._get_ops_details()]


def non_builtin_ops(ops) -> list[str]:
    """The ops that are not plain TFLite builtins (Flex, custom, resource-variable ops)."""
    return sorted({op for op in ops if op in _NOT_BUILTIN or op.startswith("Flex")
                   or not re.fullmatch(r"[A-Z0-9_]+", op)})


def _short_converter_message(message: str, limit: int = 2000) -> str:
    """The converter's error without its MLIR source locations (often 10+ kB)."""
    lines = []
    for line in message.splitlines():
        if "loc(" in line and "error:" in line:
            line = "error:" + line.rsplit("error:", 1)[1]
        if line.strip():
            lines.append(line.strip())
    text = " | ".join(lines)
    return text if len(text) <= limit else text[:limit] + " ..."


def _flex_ops_in(message: str) -> list[str]:
    return sorted(set(re.findall(r"\btf\.([A-Za-z0-9_]+)", message)))


def export_tflite(generator, config: Config, path: str, quantize: str = "float32",
                  representative_images=None, float_io: bool = False, overwrite: bool = False,
                  verify: bool = True) -> str:
    """Convert one generator to a TFLite file at `path`.

    quantize: float32 ('none'), float16, dynamic (int8 weights, float activations) or int8
    (int8 weights and activations; needs `representative_images`: arrays, a list, or a
    callable returning an iterable of RGB images, uint8 or float in [-1, 1]).
    Input [1, S, S, 3] uint8 RGB (float_io: float32 in [-1, 1]); outputs `image` (same
    type) and `heatmap` (float32 [1, S/4, S/4]). Only builtin ops: fails with ExportError
    listing any other op. The file is written to a temporary name and renamed; an existing
    file is refused unless overwrite=True."""
    q = normalize_quantization(quantize)
    size = config.img_size
    path = os.path.abspath(path)
    _refuse_before_converting(generator, path, q, representative_images, overwrite)
    converter = _make_converter(generator, size, q, representative_images, float_io)
    flatbuffer = _convert(converter, q)
    _refuse_non_builtin_ops(flatbuffer, q)
    if verify:
        _verify_finite(flatbuffer, q)
    _refuse_existing(path, overwrite)
    return write_bytes_atomic(path, flatbuffer)


def _refuse_before_converting(generator, path, q, representative_images, overwrite):
    """Refuse an existing file, a file over the FlatBuffer limit, or int8 without images."""
    _refuse_existing(path, overwrite)
    estimate = estimate_tflite_bytes(generator, q)
    if estimate > FLATBUFFER_LIMIT - FLATBUFFER_MARGIN:
        raise ExportError(
            f"a {q} TFLite file of this generator would be about {estimate / 2**30:.2f} GiB, "
            f"over the 2 GiB FlatBuffer limit of TFLite; use --quantize float16, dynamic or "
            f"int8 (or the light model)")
    if q == "int8" and representative_images is None:
        raise ExportError("int8 quantization needs representative images (the data set's "
                          "trainA/trainB or --representative_dir)")


def _refuse_existing(path, overwrite):
    """Refuse an existing file at `path` unless overwrite is set."""
    if os.path.exists(path) and not overwrite:
        raise ExportError(f"{path} already exists; export with a new --version or remove it")


def _make_converter(generator, size, q, representative_images, float_io):
    """A converter of the generator (traced at `size`) to builtin ops, set up for `q`."""
    module = _TFLiteModule(generator, size, float_io, int8=q == "int8")
    concrete = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if q != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if q == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif q == "int8":
        samples = representative_arrays(representative_images, size, float_io)
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def _convert(converter, q) -> bytes:
    """Run the converter; its failure becomes an ExportError naming the ops without builtins."""
    try:
        return converter.convert()
    except Exception as e:  # ConverterError, or RuntimeError from the calibrator
        ops = _flex_ops_in(str(e))
        hint = (f" ops without a TFLite builtin: {', '.join(ops)}." if ops else "")
        raise ExportError(f"TFLite conversion ({q}) failed:{hint} Only builtin ops are "
                          f"allowed (no Flex / select TF ops). Converter said: "
                          f"{_short_converter_message(str(e))}") from e


def _refuse_non_builtin_ops(flatbuffer, q):
    """Refuse a converted model that uses ops other than TFLite builtins."""
    bad = non_builtin_ops(tflite_ops(flatbuffer))
    if bad:
        raise ExportError(f"the {q} TFLite model uses ops that are not TFLite builtins: "
                          f"{', '.join(bad)} (VAR_HANDLE / READ_VARIABLE mean the weights "
                          f"were not embedded)")


def _verify_finite(flatbuffer, q):
    """Run the model once on a mid-grey image: every output must be finite."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=flatbuffer, num_threads=2)
    runner = interpreter.get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    grey = np.full(detail["shape"], 128 if detail["dtype"] == np.uint8 else 0.0,
                   dtype=detail["dtype"])
    outputs = runner(**{name: grey})
    for key, value in outputs.items():
        if not np.all(np.isfinite(value.astype(np.float64))):
            raise ExportError(f"the {q} TFLite model gives non-finite values in its {key!r} "
                              f"output (weights lost in conversion?)")


def run_tflite(path, image, num_threads=2):
    """Run a TFLite generator on one image ([S, S, 3] or [1, S, S, 3] in the model's input
    type); returns {'image': ..., 'heatmap': ...} (batch dimension kept)."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    runner = interpreter.get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    x = np.asarray(image, dtype=detail["dtype"])
    if x.ndim == 3:
        x = x[None]
    return runner(**{name: x})
