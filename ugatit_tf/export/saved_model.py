"""Export the generators for serving: a SavedModel for TF Serving and TFLite files.

`export_models(config, ...)` restores the latest checkpoint (`load_networks`) and writes

    export_dir/
        models.config                   TF Serving model config (every SavedModel found here)
        NAME/VERSION/saved_model.pb     SavedModel in TF Serving's layout (NAME: --dataset)
        NAME/VERSION/variables/...
        tflite/NAME/VERSION/a2b_float32.tflite, b2a_int8.tflite, ...

SavedModel signatures (`saved_model_cli show --dir export/NAME/1 --all` lists them):

    serving_default, a2b_bytes   A -> B   image_bytes: string [N] (JPEG/PNG/BMP/GIF bytes;
    b2a_bytes                    B -> A   TF Serving's REST API takes {"b64": ...})
                                          -> image_bytes: string [N], PNG bytes of the
                                          translated image resized back (bilinear) to the
                                          size of its input
    a2b_bytes_model_size,        the same, but the PNG stays img_size x img_size (what the
    b2a_bytes_model_size         original test phase writes)
    a2b, b2a                     images: float32 [N, img_size, img_size, 3] in [-1, 1]
                                 -> images (same), cam_logits [N, 2], heatmaps [N, h, w]

Byte inputs go through guards in the graph: an empty string, more than `max_bytes` bytes, a
format other than JPEG/PNG/BMP/GIF, a header that declares more than `max_pixels` pixels
(read from the header before anything is decoded: JPEG SOF via extract_jpeg_shape, PNG IHDR,
GIF screen, BMP info header), an animated GIF whose frames together exceed `max_pixels` (TF
decodes every frame), undecodable data, or more than `max_batch` images fail the request
with InvalidArgument (HTTP 400 in TF Serving) and a message that says which image and why.

The pixel pipeline is the original test phase's: decode to RGB, bilinear resize to
img_size x img_size (as cv2.resize; rounded to uint8 like cv2's uint8 output), x/127.5 - 1,
generator, ((y + 1) / 2 * 255) rounded and clipped to uint8.

TFLite: one generator per file, fixed size [1, img_size, img_size, 3], uint8 RGB in and out
with the pixel scaling inside the model (or float [-1, 1] I/O with float_io=True), plus the
CAM heatmap [1, h, w] (float32) as a second output. Quantizations float32, float16, dynamic
(int8 weights) and int8 (int8 weights and activations, calibrated on representative images).
Only TFLite builtin ops are allowed; an export that would need Flex (select TF) ops fails
with the list of ops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from ugatit_tf.config import Config, add_config_flags, config_from_args

DEFAULT_MAX_BYTES = 10 * 1024 * 1024        # 10 MiB per encoded image
DEFAULT_MAX_PIXELS = 4096 * 4096            # 16.8 megapixels per decoded image
DEFAULT_MAX_BATCH = 16                      # images per request
DEFAULT_REPRESENTATIVE_COUNT = 100          # int8 calibration images per direction

EXPORT_FORMATS = ("saved_model", "tflite", "all")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
QUANTIZE_CHOICES = ("none",) + QUANTIZATIONS + ("all",)
DIRECTIONS = ("a2b", "b2a")

BYTES_SIGNATURES = ("serving_default", "a2b_bytes", "b2a_bytes", "a2b_bytes_model_size",
                    "b2a_bytes_model_size")
FLOAT_SIGNATURES = ("a2b", "b2a")
SIGNATURES = BYTES_SIGNATURES + FLOAT_SIGNATURES

README_PATH = ""  # "": export_dir/README.md; None: no README
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# A flatbuffer cannot exceed 2 GiB; keep a margin for the graph and metadata.
FLATBUFFER_LIMIT = 2 ** 31
FLATBUFFER_MARGIN = 64 * 2 ** 20
BYTES_PER_PARAM = {"float32": 4, "float16": 2, "dynamic": 1, "int8": 1}

# Ops that mean the model is not self-contained TFLite builtins: weights left as resource
# variables (the Keras model's variables were not tracked) or custom / Flex ops.
_NOT_BUILTIN = {"CUSTOM", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE",
                "DELEGATE"}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ExportError(RuntimeError):
    """The export cannot be done as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------
# Pixel helpers shared by the SavedModel and TFLite graphs
# ---------------------------------------------------------------------------

def to_uint8(images):
    """[-1, 1] float -> uint8 pixels: ((x + 1) / 2 * 255), rounded and clipped."""
    x = (tf.cast(images, tf.float32) + 1.0) / 2.0 * 255.0
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def from_uint8(pixels):
    """uint8 pixels -> [-1, 1] float (x / 127.5 - 1, as the original's preprocessing)."""
    return tf.cast(pixels, tf.float32) / 127.5 - 1.0


def resize_uint8(image, size):
    """Bilinear resize of one uint8 [h, w, 3] image to [size, size, 3] uint8, like
    cv2.resize(INTER_LINEAR) in the original test phase (half-pixel centres, no
    antialiasing, result rounded to uint8)."""
    x = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear",
                        antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def _variables(model):
    """The backing tf.Variables of a Keras 3 model. A tf.Module does not see a Keras 3
    model's variables through the model itself (keras.Variable is not a tf.Variable), so a
    module that only holds the model saves no weights and the TFLite converter turns them
    into resource ops (NaN outputs). Holding this list on the module keeps them tracked."""
    return [getattr(v, "value", v) for v in model.variables]


# ---------------------------------------------------------------------------
# Guards on encoded image bytes
# ---------------------------------------------------------------------------

def _check(condition, message):
    """An assertion op whose failure is InvalidArgument with `message` (a string tensor)."""
    return tf.debugging.Assert(condition, [message], summarize=1)


def _header_uint(padded, pos, nbytes, dtype, little_endian):
    raw = tf.strings.substr(padded, pos, nbytes)
    return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian)[0], tf.int64)


def _declared_size(data, is_jpeg, is_png, is_gif):
    """[height, width] (int64) that the file's header declares, read without decoding:
    JPEG via tf.image.extract_jpeg_shape, PNG from IHDR (big-endian int32 at 16 / 20), GIF
    from the logical screen (little-endian uint16 at 6 / 8), BMP from the info header
    (little-endian int32 at 18 / 22; a negative height means top-down rows)."""
    padded = tf.strings.join([data, tf.constant(b"\0" * 32)])  # never read past the end
    png = tf.stack([_header_uint(padded, 20, 4, tf.int32, False),
                    _header_uint(padded, 16, 4, tf.int32, False)])
    gif = tf.stack([_header_uint(padded, 8, 2, tf.uint16, True),
                    _header_uint(padded, 6, 2, tf.uint16, True)])
    bmp = tf.abs(tf.stack([_header_uint(padded, 22, 4, tf.int32, True),
                           _header_uint(padded, 18, 4, tf.int32, True)]))
    other = tf.where(is_png, png, tf.where(is_gif, gif, bmp))
    return tf.cond(is_jpeg,
                   lambda: tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64),
                   lambda: other)


GIF_MAX_STEPS = 100_000  # data blocks walked when counting GIF frames (a 10 MB GIF has ~40k)


def _gif_frame_count(data, limit):
    """Number of images (frames) in a GIF, counted by walking its block structure without
    decoding; stops early past `limit`. TF's GIF decoder reads every frame into memory even
    when only the first is returned, so a small animated GIF can expand to gigabytes.
    Returns (frames, finished): finished is False when the walk needed more than
    GIF_MAX_STEPS steps (a file cut into very many tiny blocks)."""
    b = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
    size = tf.size(b, out_type=tf.int64)

    def at(i):
        i = tf.cast(i, tf.int64)
        return tf.where(i < size, tf.gather(b, tf.clip_by_value(i, 0, size - 1)),
                        tf.constant(-1, tf.int64))

    def colour_table(packed):  # bytes of the colour table that a packed-flags byte announces
        return tf.where(tf.bitwise.bitwise_and(packed, 0x80) > 0,
                        3 * tf.bitwise.left_shift(tf.constant(2, tf.int64),
                                                  tf.bitwise.bitwise_and(packed, 7)),
                        tf.constant(0, tf.int64))

    start = 13 + colour_table(at(10))  # header 6 + logical screen descriptor 7 + global table

    def body(pos, frames, in_blocks, steps, done):
        c = at(pos)
        # inside a run of data sub-blocks: a length byte, 0 ends the run
        block_pos = tf.where(c > 0, pos + c + 1, pos + 1)
        block_done = c < 0
        # between blocks: 0x21 extension, 0x2C image, 0x3B trailer, anything else: stop
        is_ext, is_image = tf.equal(c, 0x21), tf.equal(c, 0x2C)
        image_pos = pos + 10 + colour_table(at(pos + 9)) + 1  # descriptor, table, LZW size
        top_pos = tf.where(is_ext, pos + 2, tf.where(is_image, image_pos, pos))
        top_done = tf.logical_not(tf.logical_or(is_ext, is_image))
        return (tf.where(in_blocks, block_pos, top_pos),
                frames + tf.cast(tf.logical_and(tf.logical_not(in_blocks), is_image), tf.int64),
                tf.where(in_blocks, c > 0, tf.logical_or(is_ext, is_image)),
                steps + 1,
                tf.where(in_blocks, block_done, top_done))

    def cond(pos, frames, in_blocks, steps, done):
        return tf.logical_and(tf.logical_and(tf.logical_not(done), frames <= limit),
                              steps < GIF_MAX_STEPS)

    _, frames, _, steps, done = tf.while_loop(
        cond, body, (start, tf.constant(0, tf.int64), tf.constant(False),
                     tf.constant(0, tf.int64), tf.constant(False)),
        parallel_iterations=1)
    return frames, tf.logical_or(done, frames > limit)


def decode_guarded(data, index, size, max_bytes, max_pixels):
    """Decode one encoded image (scalar string) to uint8 [size, size, 3] after the guards;
    also returns its original [height, width] (int32). Any problem raises InvalidArgument
    naming `image_bytes[index]`."""
    label = tf.strings.format("image_bytes[{}]", (index,))
    n = tf.strings.length(data)
    checks = [
        _check(n > 0, tf.strings.join([label, ": empty string; expected the bytes of a JPEG, "
                                              "PNG, BMP or GIF image"])),
        _check(n <= max_bytes, tf.strings.join([
            label, tf.strings.format(": {} bytes, more than the limit of {} bytes "
                                     "(max_bytes)", (n, max_bytes))])),
    ]
    with tf.control_dependencies(checks):
        head = tf.strings.substr(data, 0, tf.minimum(n, 8))
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), _JPEG_MAGIC)
    is_png = tf.equal(head, _PNG_MAGIC)
    head6 = tf.strings.substr(head, 0, 6)
    is_gif = tf.logical_or(tf.equal(head6, b"GIF87a"), tf.equal(head6, b"GIF89a"))
    is_bmp = tf.equal(tf.strings.substr(head, 0, 2), b"BM")
    known = tf.reduce_any(tf.stack([is_jpeg, is_png, is_gif, is_bmp]))
    with tf.control_dependencies([_check(known, tf.strings.join([
            label, ": not a JPEG, PNG, BMP or GIF image (undecodable bytes)"]))]):
        declared = _declared_size(data, is_jpeg, is_png, is_gif)
    kind = tf.where(is_jpeg, "JPEG", tf.where(is_png, "PNG", tf.where(is_gif, "GIF", "BMP")))
    png_ok = tf.logical_or(tf.logical_not(is_png), tf.logical_and(
        n >= 24, tf.equal(tf.strings.substr(tf.strings.join([data, b"\0" * 16]), 12, 4),
                          b"IHDR")))
    pixels = declared[0] * declared[1]
    checks = [
        _check(png_ok, tf.strings.join([label, ": invalid PNG (no IHDR chunk after the "
                                               "signature)"])),
        _check(pixels > 0, tf.strings.join([
            label, ": the ", kind, tf.strings.format(" header declares {}x{} pixels (an empty or "
                                                     "corrupt image)",
                                                     (declared[0], declared[1]))])),
        _check(pixels <= max_pixels, tf.strings.join([
            label, ": the ", kind, tf.strings.format(
                " header declares {}x{} = {} pixels, more than the limit of {} pixels "
                "(max_pixels)", (declared[0], declared[1], pixels, max_pixels))])),
    ]
    with tf.control_dependencies(checks):
        # GIF: every frame is decoded, so frames x screen pixels must stay under the limit.
        frame_limit = max_pixels // tf.maximum(pixels, 1)
        frames, finished = tf.cond(
            is_gif, lambda: _gif_frame_count(data, frame_limit),
            lambda: (tf.constant(1, tf.int64), tf.constant(True)))
    checks = [
        _check(finished, tf.strings.join([
            label, f": GIF with more than {GIF_MAX_STEPS} data blocks; re-encode it or send "
                   f"a PNG or JPEG"])),
        _check(frames <= frame_limit, tf.strings.join([
            label, tf.strings.format(
                ": animated GIF with more than {} frames of {}x{} pixels: decoding all frames "
                "would exceed the limit of {} pixels (max_pixels); send a still image",
                (frame_limit, declared[0], declared[1], max_pixels))])),
    ]
    with tf.control_dependencies(checks):
        data = tf.identity(data)
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    hw = tf.shape(image)[:2]
    decoded = tf.cast(hw[0], tf.int64) * tf.cast(hw[1], tf.int64)
    with tf.control_dependencies([_check(
            tf.logical_and(decoded > 0, decoded <= max_pixels), tf.strings.join([
                label, tf.strings.format(": decoded to {}x{} pixels; expected between 1 and "
                                         "{} pixels (max_pixels)",
                                         (hw[0], hw[1], max_pixels))]))]):
        image = resize_uint8(image, size)
    return image, hw


def _batch_checks(n, max_batch, what):
    return [_check(n >= 1, tf.constant(f"{what}: no images given (batch of 0)")),
            _check(n <= max_batch, tf.strings.join([
                tf.strings.format(f"{what}: {{}} images in one request, more than the limit "
                                  "of {} (max_batch)", (n, max_batch))]))]


# ---------------------------------------------------------------------------
# SavedModel
# ---------------------------------------------------------------------------

class _ServingModule(tf.Module):
    """Holds both generators' variables (so they are saved) and the signature functions."""

    def __init__(self, nets, size, max_bytes, max_pixels, max_batch):
        super().__init__(name="ugatit_serving")
        self.a2b_variables = _variables(nets.genA2B)
        self.b2a_variables = _variables(nets.genB2A)
        gens = {"a2b": nets.genA2B, "b2a": nets.genB2A}
        self.functions = {}
        for direction, gen in gens.items():
            self.functions[direction] = tf.function(
                _float_fn(gen, max_batch, direction),
                input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                               name="images")])
            for resize_back, suffix in ((True, ""), (False, "_model_size")):
                self.functions[f"{direction}_bytes{suffix}"] = tf.function(
                    _bytes_fn(gen, size, max_bytes, max_pixels, max_batch, resize_back,
                              f"{direction}_bytes{suffix}"),
                    input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        for name, fn in self.functions.items():
            setattr(self, name, fn)

    def signatures(self):
        concrete = {name: fn.get_concrete_function() for name, fn in self.functions.items()}
        out = {"serving_default": concrete["a2b_bytes"]}
        out.update(concrete)
        return out


def _float_fn(generator, max_batch, what):
    def fn(images):
        with tf.control_dependencies(_batch_checks(tf.shape(images)[0], max_batch, what)):
            images = tf.identity(images)
        y, cam_logit, heatmap = generator(images, training=False)
        return {"images": tf.cast(y, tf.float32), "cam_logits": tf.cast(cam_logit, tf.float32),
                "heatmaps": tf.cast(heatmap, tf.float32)}
    return fn


def _bytes_fn(generator, size, max_bytes, max_pixels, max_batch, resize_back, what):
    def fn(image_bytes):
        n = tf.shape(image_bytes)[0]
        with tf.control_dependencies(_batch_checks(n, max_batch, what)):
            index = tf.range(n)
        # One image at a time: a decoded image may be large (up to max_pixels).
        images, sizes = tf.map_fn(
            lambda args: decode_guarded(args[0], args[1], size, max_bytes, max_pixels),
            (image_bytes, index),
            fn_output_signature=(tf.TensorSpec([size, size, 3], tf.uint8),
                                 tf.TensorSpec([2], tf.int32)),
            parallel_iterations=1)
        y, _, _ = generator(from_uint8(images), training=False)
        y = tf.cast(y, tf.float32)

        def encode(args):
            image, hw = args
            if resize_back:
                image = tf.image.resize(image, hw, method="bilinear", antialias=False)
            return tf.io.encode_png(to_uint8(image))

        png = tf.map_fn(encode, (y, sizes), fn_output_signature=tf.TensorSpec([], tf.string),
                        parallel_iterations=1)
        return {"image_bytes": png}
    return fn


def export_saved_model(nets, config: Config, path: str, max_bytes: int = DEFAULT_MAX_BYTES,
                       max_pixels: int = DEFAULT_MAX_PIXELS,
                       max_batch: int = DEFAULT_MAX_BATCH) -> str:
    """Write both generators of `nets` as one SavedModel at `path` (a TF Serving version
    folder such as export/selfie2anime/1). It is written into a temporary sibling folder
    and renamed into place; an existing `path` is never overwritten."""
    _check_limits(max_bytes, max_pixels, max_batch)
    path = os.path.abspath(path)
    _refuse_existing_version(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    module = _ServingModule(nets, config.img_size, int(max_bytes), int(max_pixels),
                            int(max_batch))
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; TF Serving may run as another user
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        _refuse_existing_version(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _refuse_existing_version(path):
    if os.path.exists(path):
        raise ExportError(
            f"{path} already exists; an exported version is never overwritten. Export with a "
            f"new --version (TF Serving serves the highest version number) or remove it.")


def _check_limits(max_bytes, max_pixels, max_batch):
    for name, value in (("max_bytes", max_bytes), ("max_pixels", max_pixels),
                        ("max_batch", max_batch)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ExportError(f"--{name} must be a whole number >= 1, got {value!r}")


def models_config_text(names) -> str:
    """TF Serving's model config (text protobuf) serving each model from /models/NAME, i.e.
    with the export folder mounted at /models."""
    entries = "".join(
        "  config {\n"
        f"    name: \"{name}\"\n"
        f"    base_path: \"/models/{name}\"\n"
        "    model_platform: \"tensorflow\"\n"
        "  }\n" for name in names)
    return "model_config_list {\n" + entries + "}\n"


def served_models(export_dir) -> list[str]:
    """Names of the folders of export_dir that hold at least one SavedModel version."""
    names = []
    if not os.path.isdir(export_dir):
        return names
    for name in sorted(os.listdir(export_dir)):
        folder = os.path.join(export_dir, name)
        if not os.path.isdir(folder) or not _NAME_RE.match(name):
            continue
        for version in os.listdir(folder):
            if version.isdigit() and os.path.exists(
                    os.path.join(folder, version, "saved_model.pb")):
                names.append(name)
                break
    return names


def write_models_config(export_dir) -> str:
    """Write export_dir/models.config listing every SavedModel folder in export_dir."""
    path = os.path.join(export_dir, "models.config")
    _write_atomic(path, models_config_text(served_models(export_dir)).encode())
    return path


def _mount_source(export_dir):
    return (f"$(pwd)/{os.path.normpath(export_dir)}" if not os.path.isabs(export_dir)
            else os.path.normpath(export_dir))


def docker_command(export_dir, name) -> str:
    """The `docker run` line serving export_dir/name with TF Serving (REST on port 8501)."""
    return (f"docker run -p 8501:8501 --mount type=bind,source={_mount_source(export_dir)}/"
            f"{name},target=/models/{name} -e MODEL_NAME={name} -t tensorflow/serving")


def serving_instructions(export_dir, name, img_size) -> str:
    """Markdown for the README: running TF Serving on the export and calling it."""
    source = _mount_source(export_dir)
    docker = docker_command(export_dir, name)
    docker_all = (f"docker run -p 8501:8501 -p 8500:8500 --mount type=bind,source={source},"
                  f"target=/models -t tensorflow/serving "
                  f"--model_config_file=/models/models.config")
    url = f"http://localhost:8501/v1/models/{name}:predict"
    return f"""## Serving with TF Serving

`python main.py --phase export` writes a SavedModel in TF Serving's layout
(`{export_dir}/{name}/<version>/`) and `{export_dir}/models.config`. Serve it with

```bash
{docker}
```

or serve every exported model through the model config file (REST on 8501, gRPC on 8500):

```bash
{docker_all}
```

Signatures (`saved_model_cli show --dir {export_dir}/{name}/1 --all`):

| signature | input | output |
|---|---|---|
| `serving_default`, `a2b_bytes` | `image_bytes`: JPEG/PNG/BMP/GIF bytes (A) | `image_bytes`: PNG (B), at the input's size |
| `b2a_bytes` | `image_bytes` (B) | `image_bytes`: PNG (A), at the input's size |
| `a2b_bytes_model_size`, `b2a_bytes_model_size` | `image_bytes` | PNG at {img_size}x{img_size} |
| `a2b`, `b2a` | `images`: float32 [N, {img_size}, {img_size}, 3] in [-1, 1] | `images`, `cam_logits`, `heatmaps` |

Inputs are resized to {img_size}x{img_size} (bilinear), translated, and by default resized
back to their own size. Empty or undecodable bytes, images over the byte or pixel limits
(`--max_bytes`, `--max_pixels`) and batches over `--max_batch` are answered with HTTP 400
and a message naming the image.

REST call with curl (TF Serving decodes `{{"b64": ...}}` into bytes and returns outputs whose
name ends in `_bytes` the same way):

```bash
curl -s {url} \\
  -d "{{\\"signature_name\\": \\"serving_default\\", \\"instances\\": [{{\\"b64\\": \\"$(base64 -w0 photo.jpg)\\"}}]}}" \\
  | python -c 'import base64, json, sys; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["predictions"][0]["b64"]))' > anime.png
```

or with the client (`--signature b2a_bytes` for B -> A; `--grpc localhost:8500 --model {name}`
uses gRPC, which needs `pip install tensorflow-serving-api`):

```bash
python tools/serving_client.py --url {url} --image photo.jpg --out anime.png
```

## TFLite

`python main.py --phase export --export_format tflite --quantize all` writes
`{export_dir}/tflite/{name}/<version>/{{a2b,b2a}}_{{float32,float16,dynamic,int8}}.tflite`
(int8 is calibrated on images of the generator's input domain: the data set's trainA /
trainB or `--representative_dir`). Each takes one uint8 RGB image [1, {img_size}, {img_size}, 3]
and returns `image` (uint8 RGB, same size) and `heatmap` (float32 CAM attention,
[1, {img_size // 4}, {img_size // 4}]); only TFLite builtin ops are used.

```python
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter("{export_dir}/tflite/{name}/1/a2b_float16.tflite", num_threads=2).get_signature_runner()
anime = runner(image=photo_uint8[None])["image"][0]   # photo resized to {img_size}x{img_size}
```
"""


# ---------------------------------------------------------------------------
# TFLite
# ---------------------------------------------------------------------------

def _upsample_2x_4d(x):
    """nearest_upsample_2x with 4-D ops only (CONCATENATION + RESHAPE). layers.py's version
    broadcasts a 6-D x[:, :, None, :, None, :], which TFLite's int8 STRIDED_SLICE kernel
    rejects ("only supports 1D-5D input arrays"); the result is identical."""
    dynamic = tf.shape(x)
    n, h, w, c = [x.shape[i] if x.shape[i] is not None else dynamic[i] for i in range(4)]
    x = tf.reshape(tf.concat([x, x], axis=-1), [n, h, w * 2, c])   # repeat each column
    return tf.reshape(tf.concat([x, x], axis=2), [n, h * 2, w * 2, c])  # repeat each row


@contextlib.contextmanager
def _tflite_friendly_ops():
    """While tracing for TFLite, let the generator use the 4-D upsampling."""
    from ugatit_tf.model import networks
    original = networks.nearest_upsample_2x
    networks.nearest_upsample_2x = _upsample_2x_4d
    try:
        yield
    finally:
        networks.nearest_upsample_2x = original


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
        self.weights = _variables(generator)
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
            y, _, heatmap = generator(x, training=False)
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


def _quantizations(quantize: str) -> list[str]:
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
            a = np.clip(np.round((a.astype(np.float32) + 1.0) / 2.0 * 255.0), 0, 255)
            a = a.astype(np.uint8)
        pixels = resize_uint8(tf.constant(a), size)[None]
        out.append(from_uint8(pixels).numpy() if float_io else pixels.numpy())
    if not out:
        raise ExportError("int8 quantization needs representative images, and none were "
                          "given (the data set's trainA/trainB or --representative_dir)")
    return out


def image_files(folder) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS))


def load_images(files, limit=DEFAULT_REPRESENTATIVE_COUNT, seed=0) -> list[np.ndarray]:
    """Up to `limit` of the files (a seeded random choice when there are more), decoded to
    uint8 RGB arrays."""
    files = list(files)
    if len(files) > limit:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    return [tf.io.decode_image(tf.io.read_file(f), channels=3, expand_animations=False).numpy()
            for f in files]


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
    if os.path.exists(path) and not overwrite:
        raise ExportError(f"{path} already exists; export with a new --version or remove it")
    estimate = estimate_tflite_bytes(generator, q)
    if estimate > FLATBUFFER_LIMIT - FLATBUFFER_MARGIN:
        raise ExportError(
            f"a {q} TFLite file of this generator would be about {estimate / 2**30:.2f} GiB, "
            f"over the 2 GiB FlatBuffer limit of TFLite; use --quantize float16, dynamic or "
            f"int8 (or the light model)")
    if q == "int8" and representative_images is None:
        raise ExportError("int8 quantization needs representative images (the data set's "
                          "trainA/trainB or --representative_dir)")

    module = _TFLiteModule(generator, size, float_io, int8=q == "int8")
    with _tflite_friendly_ops():
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
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # ConverterError, or RuntimeError from the calibrator
        ops = _flex_ops_in(str(e))
        hint = (f" ops without a TFLite builtin: {', '.join(ops)}." if ops else "")
        raise ExportError(f"TFLite conversion ({q}) failed:{hint} Only builtin ops are "
                          f"allowed (no Flex / select TF ops). Converter said: "
                          f"{_short_converter_message(str(e))}") from e
    bad = non_builtin_ops(tflite_ops(flatbuffer))
    if bad:
        raise ExportError(f"the {q} TFLite model uses ops that are not TFLite builtins: "
                          f"{', '.join(bad)} (VAR_HANDLE / READ_VARIABLE mean the weights "
                          f"were not embedded)")
    if verify:
        _verify_finite(flatbuffer, q)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path) and not overwrite:
        raise ExportError(f"{path} already exists; export with a new --version or remove it")
    _write_atomic(path, flatbuffer)
    return path


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


def tflite_latency(path, runs=10, num_threads=2, warmup=2, seed=0) -> dict:
    """Latency of one TFLite model with the default delegates (XNNPACK on CPU): mean,
    median, min and max milliseconds over `runs` invocations after `warmup` ones."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if detail["dtype"] == np.uint8:
        x = rng.integers(0, 256, detail["shape"], dtype=np.uint8)
    else:
        x = rng.uniform(-1, 1, detail["shape"]).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], x)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"path": path, "bytes": os.path.getsize(path), "threads": num_threads, "runs": runs,
            "mean_ms": float(np.mean(times)), "median_ms": float(np.median(times)),
            "min_ms": float(np.min(times)), "max_ms": float(np.max(times))}


def psnr(a, b) -> float:
    """PSNR in dB of two uint8 images (inf when equal)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * math.log10(255.0 ** 2 / mse))


# ---------------------------------------------------------------------------
# Everything from a checkpoint
# ---------------------------------------------------------------------------

def _representative_for(config, representative_dir, direction, count):
    """Calibration images of the generator's input domain: trainA for A -> B, trainB for
    B -> A, from representative_dir (a data set folder with trainA/trainB, or a folder of
    images used for both directions) or the data set itself."""
    split = "trainA" if direction == "a2b" else "trainB"
    if representative_dir:
        files = image_files(os.path.join(representative_dir, split)) or image_files(
            representative_dir)
        where = representative_dir
    else:
        where = os.path.join(config.dataset_dir, config.dataset, split)
        files = image_files(where)
    if not files:
        raise ExportError(f"int8 quantization of {direction} needs representative images of its "
                          f"input domain and {where} has none; pass --representative_dir (a "
                          f"folder with {split}/ or with images)")
    return load_images(files, count, config.seed)


def _option(value, config, name, default):
    """An explicit argument, else the Config field of that name (if Config has it), else the
    default."""
    if value is not None:
        return value
    return getattr(config, name, default)


def export_models(config: Config, export_dir: str | None = None,
                  export_format: str | None = None, quantize: str | None = None,
                  version: int | None = None, max_bytes: int | None = None,
                  max_pixels: int | None = None, representative_dir: str | None = None,
                  model_name: str | None = None, max_batch: int | None = None,
                  float_io: bool | None = None,
                  representative_count: int = DEFAULT_REPRESENTATIVE_COUNT,
                  readme_path: str | None = README_PATH, nets=None) -> dict:
    """Restore the latest checkpoint of `config` and export it (see the module docstring).

    Every option left as None comes from the Config field of the same name when Config has
    one (--export_dir, --export_format, --quantize, --version, ...), else from the defaults:
    export_dir 'export', export_format 'saved_model', quantize 'none' (float32), version 1,
    max_bytes 10 MiB, max_pixels 4096*4096, max_batch 16, model_name --dataset, uint8 TFLite
    I/O. Returns the written paths: 'saved_model', 'models_config', 'readme' (for
    saved_model / all) and one '<direction>_<quantization>' key per TFLite file (for tflite /
    all). `nets` (already built Networks) skips the checkpoint restore."""
    export_dir = _option(export_dir, config, "export_dir", "export")
    export_format = _option(export_format, config, "export_format", "saved_model")
    quantize = _option(quantize, config, "quantize", "none")
    version = _option(version, config, "version", 1)
    max_bytes = _option(max_bytes, config, "max_bytes", DEFAULT_MAX_BYTES)
    max_pixels = _option(max_pixels, config, "max_pixels", DEFAULT_MAX_PIXELS)
    max_batch = _option(max_batch, config, "max_batch", DEFAULT_MAX_BATCH)
    representative_dir = _option(representative_dir, config, "representative_dir", None)
    float_io = bool(float_io)
    config.validate()
    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"--export_format must be one of {', '.join(EXPORT_FORMATS)}; "
                          f"got {export_format!r}")
    quantizations = _quantizations(quantize) if export_format != "saved_model" else []
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ExportError(f"--version must be a whole number >= 1, got {version!r}")
    name = model_name or config.dataset
    if not _NAME_RE.match(name):
        raise ExportError(f"the model name {name!r} (from --dataset or --model_name) may only "
                          f"hold letters, digits, '.', '_' and '-': TF Serving puts it in URLs")
    _check_limits(max_bytes, max_pixels, max_batch)
    saved_model_path = os.path.join(export_dir, name, str(version))
    tflite_dir = os.path.join(export_dir, "tflite", name, str(version))
    tflite_paths = {f"{d}_{q}": os.path.join(tflite_dir, f"{d}_{q}.tflite")
                    for q in quantizations for d in DIRECTIONS}
    # Refuse before any work is done.
    if export_format in ("saved_model", "all"):
        _refuse_existing_version(os.path.abspath(saved_model_path))
    for path in tflite_paths.values():
        if os.path.exists(path):
            raise ExportError(f"{path} already exists; export with a new --version or "
                              f"remove it")
    if nets is None:
        from ugatit_tf.model.checkpoints import load_networks
        nets, prefix = load_networks(config)
        print(f"[export] restored {prefix}")

    written = {}
    if export_format in ("saved_model", "all"):
        written["saved_model"] = export_saved_model(nets, config, saved_model_path, max_bytes,
                                                    max_pixels, max_batch)
        written["models_config"] = write_models_config(export_dir)
        text = serving_instructions(export_dir, name, config.img_size)
        print(f"[export] SavedModel: {written['saved_model']}")
        print(f"[export] serve it with:\n  {docker_command(export_dir, name)}")
        if readme_path == "":
            readme_path = os.path.join(export_dir, "README.md")
        if readme_path:
            _write_atomic(readme_path, text.encode())
            written["readme"] = readme_path
    generators = {"a2b": nets.genA2B, "b2a": nets.genB2A}
    representative = {}
    for q in quantizations:
        for direction in DIRECTIONS:
            if q == "int8" and direction not in representative:
                representative[direction] = _representative_for(
                    config, representative_dir, direction, representative_count)
            key = f"{direction}_{q}"
            written[key] = export_tflite(generators[direction], config, tflite_paths[key], q,
                                         representative.get(direction), float_io=float_io)
            print(f"[export] TFLite {key}: {written[key]} "
                  f"({os.path.getsize(written[key]) / 2**20:.1f} MiB)")
    return written


def _write_atomic(path, data: bytes):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# Measurement (sizes, latency, PSNR vs float32) for the benchmark
# ---------------------------------------------------------------------------

def _sample_images(config, n, seed):
    """Domain-A test images: the data set's testA when present, else the procedural demo
    selfies, else smooth random images."""
    files = image_files(os.path.join(config.dataset_dir, config.dataset, "testA"))
    if files:
        return load_images(files, n, seed)
    try:
        from tools.demo_data import draw_photo, sample_latents
        rng = np.random.default_rng(seed)
        return [draw_photo(sample_latents(rng), size=config.img_size) for _ in range(n)]
    except ImportError:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.float32)
        big = tf.image.resize(small, [config.img_size] * 2).numpy()
        return list(np.clip(big, 0, 255).astype(np.uint8))


def measure_tflite(config: Config, out_dir: str, quantizations=QUANTIZATIONS, runs=5,
                   n_images=4, calibration_images=16, nets=None, num_threads=2) -> list[dict]:
    """Export the A -> B generator (from the checkpoint, or `nets`, or random weights when
    there is no checkpoint) in each quantization and report size, latency and PSNR of its
    uint8 output against float32's on a few images."""
    from ugatit_tf.model.networks import Networks
    if nets is None:
        try:
            from ugatit_tf.model.checkpoints import load_networks
            nets, _ = load_networks(config)
        except Exception as e:  # noqa: BLE001 -- measuring random weights is still useful
            print(f"[measure] no checkpoint ({e}); using random weights")
            tf.random.set_seed(config.seed)
            nets = Networks(config, discriminators=False)
    images = _sample_images(config, n_images + calibration_images, config.seed)
    tests, calibration = images[:n_images], images[n_images:]
    inputs = [resize_uint8(tf.constant(a), config.img_size).numpy() for a in tests]
    results, reference = [], None
    for q in quantizations:
        path = os.path.join(out_dir, f"a2b_{q}.tflite")
        start = time.perf_counter()
        export_tflite(nets.genA2B, config, path, q, calibration if q == "int8" else None,
                      overwrite=True)
        convert_s = time.perf_counter() - start
        outputs = [run_tflite(path, x)["image"][0] for x in inputs]
        if q == "float32":
            reference = outputs
        row = tflite_latency(path, runs=runs, num_threads=num_threads)
        row.update(quantization=q, convert_s=convert_s, mib=row["bytes"] / 2**20,
                   psnr_vs_float32=(float(np.mean([psnr(a, b) for a, b in
                                                    zip(outputs, reference)]))
                                    if reference is not None else None))
        results.append(row)
        print(f"[measure] {q:8s} {row['mib']:7.2f} MiB  median {row['median_ms']:8.1f} ms  "
              f"min {row['min_ms']:8.1f} ms  PSNR vs float32 {row['psnr_vs_float32']}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Measure TFLite sizes, latency and PSNR of the A -> B generator "
                    "(python -m ugatit_tf.export.saved_model --light True --measure_dir /tmp/measure)")
    add_config_flags(parser)
    parser.add_argument("--measure_dir", default=None, help="folder for the .tflite files")
    parser.add_argument("--measure_quantize", default="all", choices=QUANTIZE_CHOICES)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    config = config_from_args(args).validate()
    out_dir = args.measure_dir or tempfile.mkdtemp(prefix="ugatit-measure-")
    results = measure_tflite(config, out_dir, _quantizations(args.measure_quantize),
                             runs=args.runs, num_threads=args.threads)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
