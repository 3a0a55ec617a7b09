"""The served model: signature functions in this process or behind a TF Serving REST URL.

Both kinds answer `predict(signature, inputs)` with the SavedModel signatures of
ugatit_tf/export/saved_model.py (a2b, b2a with images/cam_logits/heatmaps; *_bytes with
image_bytes), so the page and /v1/models/NAME:predict work the same on either. `load_model`
picks the source from the flags: --serving_url, a checkpoint (the usual flags or --checkpoint),
or a SavedModel under --export_dir.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import sys

import numpy as np

from ugatit_tf.config import Config, ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DTYPE_NAMES = {"float32": "DT_FLOAT", "string": "DT_STRING", "int32": "DT_INT32",
               "int64": "DT_INT64", "uint8": "DT_UINT8"}


class PredictError(Exception):
    """A refused or failed model call: `status` is the HTTP status, the message one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def clean_tf_message(message: str) -> str:
    """The user-facing part of a TensorFlow error: the assertion text of our guards, without
    the graph's node names and stack ('Detected at node ...', '[[{{node ...}}]]')."""
    found = re.findall(r"assertion failed: \[(.*?)\]\s*(?:\n|\[\[|$)", message, flags=re.S)
    if found:
        return found[-1].strip()
    lines = [line for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.strip().startswith(("[[", "File ", "Detected"))]
    return (lines[-1] if lines else message).strip()


class LocalModel:
    """Signature functions run in this process: the export's serving module built over
    networks restored from a checkpoint, or a SavedModel loaded with tf.saved_model.load."""

    def __init__(self, functions: dict, source: str, version: str = "1"):
        self.functions = functions
        self.source = source
        self.version = version
        self.img_size = int(_inputs(functions["a2b"])["images"].shape[1])

    @classmethod
    def from_networks(cls, nets, img_size: int, max_bytes: int, max_pixels: int,
                      max_batch: int, source: str, kernels: str = "auto") -> "LocalModel":
        from ugatit_tf.export.saved_model import ServingModule
        module = ServingModule(nets, img_size, int(max_bytes), int(max_pixels), int(max_batch),
                               kernels)
        functions = dict(module.functions, serving_default=module.functions["a2b_bytes"])
        # the signatures are traced on their first call (the generators' forward passes,
        # which they share, when the module was built)
        model = cls(functions, source)
        model._module = module  # keeps the variables alive
        return model

    @classmethod
    def from_saved_model(cls, path: str) -> "LocalModel":
        import tensorflow as tf
        loaded = tf.saved_model.load(path)
        missing = [s for s in ("a2b", "b2a", "a2b_bytes", "b2a_bytes") if s not in loaded.signatures]
        if missing:
            raise ConfigError(f"--export_dir {path}: the SavedModel has no signature "
                              f"{', '.join(missing)}; export it with --phase export")
        model = cls(dict(loaded.signatures), f"SavedModel {path}",
                    version=os.path.basename(os.path.normpath(path)))
        model._loaded = loaded
        return model

    def signature_names(self) -> list[str]:
        return sorted(self.functions)

    def input_specs(self, signature: str) -> dict:
        """{input name: (dtype name, shape list)} of a signature."""
        fn = self._function(signature)
        return {name: (spec.dtype.name, spec.shape.as_list())
                for name, spec in _inputs(fn).items()}

    def output_specs(self, signature: str) -> dict:
        fn = self._function(signature)
        if not hasattr(fn, "structured_outputs"):  # a tf.function: trace it now
            fn = fn.get_concrete_function()
        return {name: (spec.dtype.name, spec.shape.as_list())
                for name, spec in fn.structured_outputs.items()}

    def _function(self, signature: str):
        if signature not in self.functions:
            raise PredictError(400, f"Serving signature name: \"{signature}\" not found in "
                                    f"signature def (have: {', '.join(self.signature_names())})")
        return self.functions[signature]

    def predict(self, signature: str, inputs: dict) -> dict:
        import tensorflow as tf
        fn = self._function(signature)
        specs = _inputs(fn)
        if set(inputs) != set(specs):
            raise PredictError(400, f"signature {signature} takes the input(s) "
                                    f"{', '.join(specs)}, got {', '.join(inputs) or 'none'}")
        try:
            tensors = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
            outputs = fn(**tensors)
        except tf.errors.InvalidArgumentError as e:
            raise PredictError(400, clean_tf_message(e.message)) from None
        except (ValueError, TypeError) as e:  # wrong shapes or dtypes of the inputs
            raise PredictError(400, f"signature {signature}: {clean_tf_message(str(e))}") from None
        return {k: v.numpy() for k, v in outputs.items()}

    def metadata(self) -> dict:
        """The signature_def part of TF Serving's GET /v1/models/NAME/metadata."""
        defs = {}
        for name in self.signature_names():
            defs[name] = {"inputs": _tensor_infos(self.input_specs(name), f"{name}_"),
                          "outputs": _tensor_infos(self.output_specs(name), ""),
                          "method_name": "tensorflow/serving/predict"}
        return {"signature_def": {"signature_def": defs}}


def _inputs(fn) -> dict:
    """{name: TensorSpec} of a signature function: a tf.function of the serving module, or a
    loaded SavedModel's signature (keyword arguments)."""
    if getattr(fn, "input_signature", None) is not None:
        return {spec.name: spec for spec in fn.input_signature}
    args, kwargs = fn.structured_input_signature
    return dict(kwargs) if kwargs else {spec.name: spec for spec in args}


def _tensor_infos(specs: dict, prefix: str) -> dict:
    return {name: {"dtype": DTYPE_NAMES.get(dtype, dtype),
                   "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                            for d in shape], "unknown_rank": False},
                   "name": f"{prefix}{name}:0"}
            for name, (dtype, shape) in specs.items()}


class RemoteModel:
    """A model served by TF Serving at `url` (http://host:8501/v1/models/NAME): predictions
    through its REST API, the image size read from its metadata at start-up."""

    def __init__(self, url: str, timeout: float = 120.0):
        import requests
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.source = f"TF Serving {self.url}"
        self.version = ""
        meta = self._get(self.url + "/metadata")
        try:
            defs = meta["metadata"]["signature_def"]["signature_def"]
            dims = defs["a2b"]["inputs"]["images"]["tensor_shape"]["dim"]
            self.img_size = int(dims[1]["size"])
            self.version = str(meta.get("model_spec", {}).get("version", ""))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ConfigError(f"--serving_url {url}: the model has no a2b signature with images "
                              f"[N, S, S, 3]; serve a SavedModel written by --phase export") from None
        self.signatures = sorted(defs)

    def _get(self, url: str) -> dict:
        import requests
        try:
            response = self.session.get(url, timeout=self.timeout)
            return response.json()
        except (requests.RequestException, ValueError) as e:
            raise ConfigError(f"--serving_url: cannot read {url}: {e}") from None

    def signature_names(self) -> list[str]:
        return list(self.signatures)

    def forward(self, path: str, body: bytes | None) -> tuple[int, bytes]:
        """Pass a request through to TF Serving unchanged: (status, JSON body)."""
        import requests
        try:
            if body is None:
                response = self.session.get(self.url + path, timeout=self.timeout)
            else:
                response = self.session.post(self.url + path, data=body, timeout=self.timeout,
                                             headers={"Content-Type": "application/json"})
        except requests.RequestException as e:  # the details for the console, not strangers
            print(f" [!] TF Serving at {self.url} cannot be reached: {e}", file=sys.stderr,
                  flush=True)
            raise PredictError(502, "the TF Serving model behind this page cannot be "
                                    "reached") from None
        return response.status_code, response.content

    def predict(self, signature: str, inputs: dict) -> dict:
        body = {"signature_name": signature,
                "inputs": {k: _json_value(v) for k, v in inputs.items()}}
        status, data = self.forward(":predict", json.dumps(body).encode())
        try:
            answer = json.loads(data)
        except ValueError:
            raise PredictError(502, f"TF Serving answered HTTP {status}: "
                                    f"{data[:200]!r}") from None
        if status != 200 or "error" in answer:
            raise PredictError(status if status >= 400 else 502,
                               str(answer.get("error", answer))[:500])
        outputs = answer.get("outputs")
        if not isinstance(outputs, dict):  # one output (the bytes signatures): the value
            outputs = {"image_bytes": outputs}
        return {k: _from_json(v) for k, v in outputs.items()}


def _json_value(array: np.ndarray):
    array = np.asarray(array)
    if array.dtype.kind in "SO":
        return [{"b64": base64.b64encode(bytes(v)).decode("ascii")} for v in array.ravel()]
    return array.tolist()


def _from_json(value):
    if isinstance(value, list) and value and isinstance(value[0], dict) and "b64" in value[0]:
        return np.array([base64.b64decode(v["b64"]) for v in value], dtype=object)
    return np.asarray(value, np.float32)


# ---------------------------------------------------------------------------
# Choosing the source from the flags
# ---------------------------------------------------------------------------

def check_serve_flags(config: Config) -> None:
    """One ConfigError naming the flag for a serve flag that cannot work (before loading)."""
    if not isinstance(config.port, int) or not 0 <= config.port <= 65535:
        raise ConfigError(f"--port must be a whole number from 0 to 65535, got {config.port!r}")
    if not isinstance(config.max_upload_bytes, int) or config.max_upload_bytes < 1:
        raise ConfigError(f"--max_upload_bytes must be a whole number >= 1, got "
                          f"{config.max_upload_bytes!r}")
    name = served_name(config)
    if not NAME_RE.match(name):
        raise ConfigError(f"--model_name must be letters, digits, '.', '_' or '-' (it is the "
                          f"NAME in /v1/models/NAME), got {name!r}")
    url = config.serving_url
    if url and not re.match(r"^https?://[^/\s]+/v1/models/[A-Za-z0-9][A-Za-z0-9._-]*/?$", url):
        raise ConfigError(f"--serving_url must look like http://host:8501/v1/models/NAME, "
                          f"got {url!r}")


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one ConfigError naming both flags."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                          f"choose another --port") from None
    sock.listen(128)
    return sock


def served_name(config: Config) -> str:
    return config.serve_model_name or config.dataset


def find_saved_model(export_dir: str, name: str) -> str | None:
    """A SavedModel folder: export_dir itself, its highest numbered version, or that of
    export_dir/NAME (the layout --phase export writes)."""
    for folder in (export_dir, os.path.join(export_dir, name)):
        if os.path.isfile(os.path.join(folder, "saved_model.pb")):
            return folder
        if os.path.isdir(folder):
            versions = [v for v in os.listdir(folder) if v.isdigit()
                        and os.path.isfile(os.path.join(folder, v, "saved_model.pb"))]
            if versions:
                return os.path.join(folder, max(versions, key=int))
    return None


def _checkpoint_source(prefix: str, precision: str) -> str:
    """The model's description for the console and /status: the checkpoint, and its compute
    precision where it is not float32 (--mixed_precision auto may choose bfloat16)."""
    return f"checkpoint {prefix}" + ("" if precision == "none" else f", {precision}")


def load_model(config: Config):
    """The model the flags name (loaded once): --serving_url; else an explicit --export_dir
    holding a SavedModel; else the checkpoint of the flags (or --checkpoint), falling back to
    a SavedModel in export/NAME when there is no checkpoint."""
    from ugatit_tf.model.checkpoints import CheckpointError, load_networks
    from ugatit_tf.model.precision import resolve_precision
    if config.serving_url:
        return RemoteModel(config.serving_url)
    name = served_name(config)
    explicit_export = config.export_dir != Config().export_dir
    saved = find_saved_model(config.export_dir, name)
    if explicit_export:
        if saved is None:
            raise ConfigError(f"--export_dir {config.export_dir}: no SavedModel there (nor in "
                              f"{os.path.join(config.export_dir, name)}/VERSION)")
        return LocalModel.from_saved_model(saved)
    precision = resolve_precision(config.mixed_precision, "serve")
    try:
        nets, prefix = load_networks(config, mixed_precision=precision)
    except CheckpointError:
        if saved is None or getattr(config, "checkpoint", ""):
            raise
        return LocalModel.from_saved_model(saved)
    max_bytes = max(config.max_bytes, config.max_upload_bytes)
    return LocalModel.from_networks(nets, config.img_size, max_bytes, config.max_pixels,
                                    config.max_batch, source=_checkpoint_source(prefix, precision),
                                    kernels=config.kernels)
