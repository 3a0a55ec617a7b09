"""The SavedModel for TF Serving: signatures, TF Serving's folder layout, models.config.

`export_saved_model(nets, config, path)` writes both generators as one SavedModel in a TF
Serving version folder (export_dir/NAME/VERSION, never overwritten); `write_models_config`
lists every exported model in export_dir/models.config; `serving_instructions` is the README
text written next to them. Signatures (`saved_model_cli show --dir export/NAME/1 --all`):
`serving_default`/`a2b_bytes` and `b2a_bytes` take encoded images (string [N], guarded by
`export.guards`) and return PNG bytes at the input's size; `*_bytes_model_size` return them at
img_size; `a2b`/`b2a` take float32 [N, img_size, img_size, 3] in [-1, 1] and return images,
cam_logits and heatmaps. The pixel pipeline and limits are described in docs/serving.md.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from ugatit_tf.common.files import write_text_atomic
from ugatit_tf.config import Config
from ugatit_tf.export.guards import (DEFAULT_MAX_BATCH, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS,
                                     batch_checks, decode_guarded)
from ugatit_tf.export.pixels import from_uint8, model_variables, to_uint8
from ugatit_tf.model.layers import choose_kernels
from ugatit_tf.model.networks import translator

BYTES_SIGNATURES = ("serving_default", "a2b_bytes", "b2a_bytes", "a2b_bytes_model_size",
                    "b2a_bytes_model_size")
FLOAT_SIGNATURES = ("a2b", "b2a")
SIGNATURES = BYTES_SIGNATURES + FLOAT_SIGNATURES
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # TF Serving puts the name in URLs


class ExportError(RuntimeError):
    """The export cannot be done as asked; the message says why and what to do."""


class ServingModule(tf.Module):
    """Holds both generators' variables (so they are saved) and the signature functions;
    `kernels` (a --kernels value: model.layers.KERNELS or "auto", which is "inference" for
    these batched calls) is how the signatures run the generators."""

    def __init__(self, nets, size, max_bytes, max_pixels, max_batch, kernels="auto"):
        super().__init__(name="ugatit_serving")
        kernels = choose_kernels(kernels, batched=True)
        self.a2b_variables = model_variables(nets.genA2B)
        self.b2a_variables = model_variables(nets.genB2A)
        gens = {"a2b": nets.genA2B, "b2a": nets.genB2A}
        self.functions = {}
        for direction, gen in gens.items():
            # one function that all signatures of the direction call: traced once, and with
            # the "frozen" kernels its constant weights stored once
            forward = translator(gen, kernels, size).get_concrete_function()
            self.functions[direction] = tf.function(
                _float_fn(forward, max_batch, direction),
                input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                               name="images")])
            for resize_back, suffix in ((True, ""), (False, "_model_size")):
                self.functions[f"{direction}_bytes{suffix}"] = tf.function(
                    _bytes_fn(forward, size, max_bytes, max_pixels, max_batch, resize_back,
                              f"{direction}_bytes{suffix}"),
                    input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        for name, fn in self.functions.items():
            setattr(self, name, fn)

    def signatures(self):
        concrete = {name: fn.get_concrete_function() for name, fn in self.functions.items()}
        out = {"serving_default": concrete["a2b_bytes"]}
        out.update(concrete)
        return out


def _float_fn(forward, max_batch, what):
    def fn(images):
        with tf.control_dependencies(batch_checks(tf.shape(images)[0], max_batch, what)):
            images = tf.identity(images)
        y, cam_logit, heatmap = forward(images)
        return {"images": tf.cast(y, tf.float32), "cam_logits": tf.cast(cam_logit, tf.float32),
                "heatmaps": tf.cast(heatmap, tf.float32)}
    return fn


def _bytes_fn(forward, size, max_bytes, max_pixels, max_batch, resize_back, what):
    def fn(image_bytes):
        n = tf.shape(image_bytes)[0]
        with tf.control_dependencies(batch_checks(n, max_batch, what)):
            index = tf.range(n)
        # One image at a time: a decoded image may be large (up to max_pixels).
        images, sizes = tf.map_fn(
            lambda args: decode_guarded(args[0], args[1], size, max_bytes, max_pixels),
            (image_bytes, index),
            fn_output_signature=(tf.TensorSpec([size, size, 3], tf.uint8),
                                 tf.TensorSpec([2], tf.int32)),
            parallel_iterations=1)
        y, _, _ = forward(from_uint8(images))
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
    check_limits(max_bytes, max_pixels, max_batch)
    path = os.path.abspath(path)
    refuse_existing_version(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    module = ServingModule(nets, config.img_size, int(max_bytes), int(max_pixels),
                            int(max_batch), config.kernels)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; TF Serving may run as another user
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        refuse_existing_version(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def refuse_existing_version(path):
    if os.path.exists(path):
        raise ExportError(
            f"{path} already exists; an exported version is never overwritten. Export with a "
            f"new --version (TF Serving serves the highest version number) or remove it.")


def check_limits(max_bytes, max_pixels, max_batch):
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
        if not os.path.isdir(folder) or not NAME_RE.match(name):
            continue
        for version in os.listdir(folder):
            if version.isdigit() and os.path.exists(
                    os.path.join(folder, version, "saved_model.pb")):
                names.append(name)
                break
    return names


_OUR_MODELS_CONFIG = re.compile(r'model_config_list \{\n(  config \{\n    name: "[^"\n]*"\n'
                                r'    base_path: "/models/[^"\n]*"\n'
                                r'    model_platform: "tensorflow"\n  \}\n)*\}\n')


def write_models_config(export_dir) -> str | None:
    """Write export_dir/models.config listing every SavedModel folder in export_dir; None,
    with nothing written, when a models.config there is not one an export wrote (a user's own
    config, with its policies, is kept)."""
    path = os.path.join(export_dir, "models.config")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            if not _OUR_MODELS_CONFIG.fullmatch(f.read(1 << 20)):
                return None
    except FileNotFoundError:
        pass
    return write_text_atomic(path, models_config_text(served_models(export_dir)))


def _mount_source(export_dir):
    return (f"$(pwd)/{os.path.normpath(export_dir)}" if not os.path.isabs(export_dir)
            else os.path.normpath(export_dir))


def docker_command(export_dir, name) -> str:
    """The `docker run` line serving export_dir/name with TF Serving (REST on port 8501)."""
    return (f"docker run -p 8501:8501 --mount type=bind,source={_mount_source(export_dir)}/"
            f"{name},target=/models/{name} -e MODEL_NAME={name} -t tensorflow/serving")


README_TITLE = "## Serving with TF Serving\n"  # how an export knows its own README.md


def serving_instructions(export_dir, name, img_size, version=1) -> str:
    """Markdown for the README: running TF Serving on the export and calling it."""
    sections = [_serving_section(export_dir, name),
                _signatures_section(export_dir, name, img_size, version),
                _calling_section(name),
                _tflite_section(export_dir, name, img_size, version)]
    return "\n".join(sections)  # a blank line between sections


def _serving_section(export_dir, name) -> str:
    """The README's `docker run` lines serving the export with TF Serving."""
    source = _mount_source(export_dir)
    docker = docker_command(export_dir, name)
    docker_all = (f"docker run -p 8501:8501 -p 8500:8500 --mount type=bind,source={source},"
                  f"target=/models -t tensorflow/serving "
                  f"--model_config_file=/models/models.config")
    return README_TITLE + f"""
`python main.py --phase export` writes a SavedModel in TF Serving's layout
(`{export_dir}/{name}/<version>/`) and `{export_dir}/models.config`. Serve it with

```bash
{docker}
```

or serve every exported model through the model config file (REST on 8501, gRPC on 8500):

```bash
{docker_all}
```
"""


def _signatures_section(export_dir, name, img_size, version) -> str:
    """The README's table of the SavedModel's signatures and what they accept."""
    return f"""\
Signatures (`saved_model_cli show --dir {export_dir}/{name}/{version} --all`):

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
"""


def _calling_section(name) -> str:
    """The README's REST call with curl and with tools/serving_client.py."""
    url = f"http://localhost:8501/v1/models/{name}:predict"
    return f"""\
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
"""


def _tflite_section(export_dir, name, img_size, version) -> str:
    """The README's TFLite files and how to run one."""
    return f"""\
## TFLite

`python main.py --phase export --export_format tflite --quantize all` writes
`{export_dir}/tflite/{name}/<version>/{{a2b,b2a}}_{{float32,float16,dynamic,int8}}.tflite`
(int8 is calibrated on images of the generator's input domain: the data set's trainA /
trainB or `--representative_dir`). Each takes one uint8 RGB image [1, {img_size}, {img_size}, 3]
and returns `image` (uint8 RGB, same size) and `heatmap` (float32 CAM attention,
[1, {img_size // 4}, {img_size // 4}]); only TFLite builtin ops are used.

```python
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter("{export_dir}/tflite/{name}/{version}/a2b_float16.tflite", num_threads=2).get_signature_runner()
anime = runner(image=photo_uint8[None])["image"][0]   # photo resized to {img_size}x{img_size}
```
"""
