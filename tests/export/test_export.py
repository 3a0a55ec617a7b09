"""Tests for ugatit_tf.export (SavedModel for TF Serving, TFLite) and tools/serving_client.py.

Tiny random models (light, img 32, ch 8, n_res 2): no checkpoint download, a few seconds per
export. TF Serving itself is not available here; the REST client is tested against an
in-test HTTP responder that implements TF Serving's documented REST predict protocol on top
of the exported SavedModel.
"""

import base64
import http.server
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import tiny_config
from ugatit_tf.export import saved_model as ex
from ugatit_tf.model import layers, networks
from ugatit_tf.model.checkpoints import make_checkpoint, model_checkpoint_dir, write_config
from ugatit_tf.config import Config
from ugatit_tf.model.networks import Networks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 32
MAX_BYTES = 200_000
MAX_PIXELS = 200 * 200
MAX_BATCH = 4


def _load_client():
    spec = importlib.util.spec_from_file_location(
        "serving_client", os.path.join(ROOT, "tools", "serving_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()


def rgb(h, w, seed=0, smooth=True):
    """A test picture: smooth colour blobs (compress like photos) or noise."""
    rng = np.random.default_rng(seed)
    if not smooth:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    small = rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    return np.clip(tf.image.resize(small, [h, w]).numpy()[0], 0, 255).astype(np.uint8)


def encode(image, fmt):
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    if fmt == "jpeg":
        return tf.io.encode_jpeg(image, quality=95).numpy()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format={"bmp": "BMP", "gif": "GIF"}[fmt])
    return buf.getvalue()


def decode(png):
    return tf.io.decode_png(png, channels=3).numpy()


def keras_uint8(generator, pixels):
    """What the export should compute for uint8 [N, S, S, 3] pixels, via the Keras model."""
    y, _, _ = generator(ex.from_uint8(pixels), training=False)
    return ex.to_uint8(y).numpy()


@pytest.fixture(scope="module")
def nets():
    tf.random.set_seed(1)
    return Networks(tiny_config(ch=8), discriminators=False)


@pytest.fixture(scope="module")
def saved_model_dir(nets, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny" / "1"
    return ex.export_saved_model(nets, tiny_config(ch=8), str(path), max_bytes=MAX_BYTES,
                                 max_pixels=MAX_PIXELS, max_batch=MAX_BATCH)


@pytest.fixture(scope="module")
def loaded(saved_model_dir):
    return tf.saved_model.load(saved_model_dir)


def run_bytes(loaded, images, signature="serving_default"):
    out = loaded.signatures[signature](image_bytes=tf.constant(images, dtype=tf.string))
    return [bytes(v) for v in out["image_bytes"].numpy()]


# ---------------------------------------------------------------------------
# SavedModel
# ---------------------------------------------------------------------------

def test_saved_model_layout_and_signatures(saved_model_dir, loaded):
    assert os.path.basename(saved_model_dir) == "1"
    assert os.path.exists(os.path.join(saved_model_dir, "saved_model.pb"))
    assert set(loaded.signatures.keys()) == set(ex.SIGNATURES)
    # no temporary folder left behind
    assert os.listdir(os.path.dirname(saved_model_dir)) == ["1"]
    sig = loaded.signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["image_bytes"]
    assert sig.structured_input_signature[1]["image_bytes"].dtype == tf.string
    assert list(sig.structured_outputs) == ["image_bytes"]
    a2b = loaded.signatures["a2b"]
    assert a2b.structured_input_signature[1]["images"].shape.as_list() == [None, SIZE, SIZE, 3]
    assert set(a2b.structured_outputs) == {"images", "cam_logits", "heatmaps"}


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_float_signatures_equal_keras(nets, loaded, direction):
    generator = nets.genA2B if direction == "a2b" else nets.genB2A
    x = tf.random.stateless_uniform([2, SIZE, SIZE, 3], seed=[3, 4], minval=-1, maxval=1)
    out = loaded.signatures[direction](images=x)
    y, cam, heat = generator(x, training=False)
    assert out["images"].shape == (2, SIZE, SIZE, 3)
    assert out["cam_logits"].shape == (2, 2)
    assert out["heatmaps"].shape == (2, SIZE // 4, SIZE // 4)
    assert np.max(np.abs(out["images"].numpy() - y.numpy())) <= 1e-5
    assert np.max(np.abs(out["cam_logits"].numpy() - cam.numpy())) <= 1e-5
    assert np.max(np.abs(out["heatmaps"].numpy() - heat.numpy())) <= 1e-5 * max(
        1.0, float(np.max(np.abs(heat.numpy()))))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "gif"])
def test_bytes_signature_round_trip(loaded, fmt):
    image = rgb(40, 50, seed=2)
    data = encode(image, fmt)
    out_a2b, out_other = run_bytes(loaded, [data, data]), run_bytes(loaded, [data], "b2a_bytes")
    for png in out_a2b + out_other:
        assert png.startswith(b"\x89PNG")
        assert decode(png).shape == (40, 50, 3)
    assert out_a2b[0] == out_a2b[1]
    small = run_bytes(loaded, [data], "a2b_bytes_model_size")
    assert decode(small[0]).shape == (SIZE, SIZE, 3)
    # the bytes path is decode -> resize to the model size -> generator -> resize back
    assert run_bytes(loaded, [data], "a2b_bytes") == out_a2b[:1]


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_bytes_equals_float_path_at_model_size(nets, loaded, direction, fmt):
    generator = nets.genA2B if direction == "a2b" else nets.genB2A
    image = rgb(SIZE, SIZE, seed=5)
    data = encode(image, fmt)
    pixels = tf.io.decode_image(data, channels=3).numpy()  # what the graph decodes
    expected = keras_uint8(generator, pixels[None])[0]
    signature = "serving_default" if direction == "a2b" else "b2a_bytes"
    got = decode(run_bytes(loaded, [data], signature)[0])
    assert np.max(np.abs(got.astype(int) - expected.astype(int))) <= 1
    got_model = decode(run_bytes(loaded, [data], f"{direction}_bytes_model_size")[0])
    assert np.max(np.abs(got_model.astype(int) - expected.astype(int))) <= 1
    # the float signature agrees too
    y = loaded.signatures[direction](images=ex.from_uint8(pixels[None]))["images"]
    assert np.max(np.abs(ex.to_uint8(y).numpy()[0].astype(int) - expected.astype(int))) <= 1


def test_bytes_resize_matches_original_preprocessing(nets, loaded):
    """A 64x48 input is bilinearly resized to 32x32 (as cv2.resize), rounded to uint8."""
    cv2 = pytest.importorskip("cv2")
    image = rgb(48, 64, seed=9)
    data = encode(image, "png")
    resized = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    ours = ex.resize_uint8(tf.constant(image), SIZE).numpy()
    assert np.max(np.abs(ours.astype(int) - resized.astype(int))) <= 1
    expected = keras_uint8(nets.genA2B, ours[None])[0]
    got = decode(run_bytes(loaded, [data], "a2b_bytes_model_size")[0])
    assert np.max(np.abs(got.astype(int) - expected.astype(int))) <= 1


def _png():
    return encode(rgb(20, 20, seed=1), "png")


@pytest.mark.parametrize("bad, message", [
    (b"", "image_bytes[1]: empty string"),
    (b"this is not an image at all", "image_bytes[1]: not a JPEG, PNG, BMP or GIF image"),
    (b"\x00" * 100, "not a JPEG, PNG, BMP or GIF image"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "PNG"),
    ("truncated_png", "PNG"),
    (b"\xff\xd8\xff" + b"\x00" * 50, "JPEG"),
    (b"GIF89a" + b"\x01" * 3, "GIF"),
    (b"BM" + b"\x00" * 60, "the BMP header declares 0x0 pixels"),
])
def test_bad_bytes_give_invalid_argument(loaded, bad, message):
    if bad == "truncated_png":
        bad = _png()[:40]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        run_bytes(loaded, [_png(), bad])
    assert message.lower() in info.value.message.lower()


def test_byte_limit(loaded):
    noisy = encode(rgb(300, 300, smooth=False), "png")
    assert len(noisy) > MAX_BYTES
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: \d+ bytes, "
                       r"more than the limit of 200000 bytes \(max_bytes\)"):
        run_bytes(loaded, [noisy])


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "gif"])
def test_pixel_limit_from_header(loaded, fmt):
    name = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF"}[fmt]
    flat = np.full((250, 210, 3), 90, np.uint8)  # 52,500 pixels > 40,000, few bytes
    data = encode(flat, fmt)
    if fmt != "bmp":
        assert len(data) < MAX_BYTES
    else:  # an uncompressed BMP is big: check the header parse through the graph helper
        data = data[:64]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"image_bytes\[0\]: the {name} header declares 250x210 = "
                             r"52500 pixels, more than the limit of 40000 pixels"):
        run_bytes(loaded, [data])


def test_pixel_limit_on_a_lying_png_header(loaded):
    """A PNG whose IHDR claims 100000 x 100000 pixels is refused before decoding."""
    data = bytearray(_png())
    data[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")
    with pytest.raises(tf.errors.InvalidArgumentError, match="100000x100000"):
        run_bytes(loaded, [bytes(data)])


def _gif(frames, h, w):
    images = [Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=frames > 1, append_images=images[1:])
    return buf.getvalue()


def test_animated_gif_guard(loaded):
    """TF decodes every GIF frame, so frames x pixels is bounded: 100x100 frames fit
    40000 pixels 4 times."""
    out = run_bytes(loaded, [_gif(4, 100, 100)])
    assert decode(out[0]).shape == (100, 100, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: animated GIF "
                       r"with more than 4 frames of 100x100 pixels"):
        run_bytes(loaded, [_gif(5, 100, 100)])


def test_gif_frame_count():
    count = tf.function(ex._gif_frame_count)
    for frames in (1, 3, 7):
        n, finished = count(_gif(frames, 20, 30), tf.constant(100, tf.int64))
        assert (int(n), bool(finished)) == (frames, True)
    n, finished = count(_gif(7, 20, 30), tf.constant(2, tf.int64))  # stops early
    assert int(n) == 3 and bool(finished)


def test_batch_limits(loaded):
    png = _png()
    assert len(run_bytes(loaded, [png] * MAX_BATCH)) == MAX_BATCH
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"5 images in one request, more "
                       r"than the limit of 4 \(max_batch\)"):
        run_bytes(loaded, [png] * 5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no images given"):
        run_bytes(loaded, [])
    with pytest.raises(tf.errors.InvalidArgumentError, match="no images given"):
        loaded.signatures["a2b"](images=tf.zeros([0, SIZE, SIZE, 3]))


def test_refuses_to_overwrite_a_version(nets, saved_model_dir):
    with pytest.raises(ex.ExportError, match="already exists.*new --version"):
        ex.export_saved_model(nets, tiny_config(ch=8), saved_model_dir)


def test_saved_model_cli_lists_signatures(saved_model_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run(command + ["show", "--dir", saved_model_dir, "--all"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ex.SIGNATURES:
        assert f"signature_def['{name}']" in result.stdout
    assert "image_bytes" in result.stdout and "cam_logits" in result.stdout


def test_models_config_and_instructions(tmp_path):
    (tmp_path / "selfie2anime" / "1").mkdir(parents=True)
    (tmp_path / "selfie2anime" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "tflite" / "selfie2anime" / "1").mkdir(parents=True)
    path = ex.write_models_config(str(tmp_path))
    text = open(path).read()
    assert text == ('model_config_list {\n  config {\n    name: "selfie2anime"\n'
                    '    base_path: "/models/selfie2anime"\n    model_platform: "tensorflow"\n'
                    '  }\n}\n')
    readme = ex.serving_instructions("export", "selfie2anime", 256)
    assert ex.docker_command("export", "selfie2anime") in readme
    assert ("docker run -p 8501:8501 --mount type=bind,source=$(pwd)/export/selfie2anime,"
            "target=/models/selfie2anime -e MODEL_NAME=selfie2anime -t tensorflow/serving"
            in readme)
    assert "http://localhost:8501/v1/models/selfie2anime:predict" in readme


# ---------------------------------------------------------------------------
# REST client against a TF Serving-like responder
# ---------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    """TF Serving's REST predict API (https://www.tensorflow.org/tfx/serving/api_rest):
    POST /v1/models/NAME[/versions/N]:predict with {"signature_name", "instances"} (row) or
    {"inputs"} (columnar); {"b64": ...} values are bytes; outputs whose alias ends in _bytes
    are returned as {"b64": ...}; errors are {"error": message} with HTTP 400/404."""

    model = None
    name = "tiny"
    requests = []

    def log_message(self, *args):
        pass

    def _answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if self.path != f"/v1/models/{self.name}:predict":
            return self._answer(404, {"error": f"Servable not found for request: {self.path}"})
        signature = body.get("signature_name", "serving_default")
        if signature not in self.model.signatures:
            return self._answer(400, {"error": f"Serving signature name: \"{signature}\" not "
                                               f"found in signature def"})
        fn = self.model.signatures[signature]
        (input_name, spec), = fn.structured_input_signature[1].items()
        columnar = "inputs" in body
        values = body["inputs"] if columnar else body["instances"]
        if columnar and isinstance(values, dict):
            values = values[input_name]
        if not columnar:  # a named instance {"image_bytes": {"b64": ...}} or a bare value
            values = [v[input_name] if isinstance(v, dict) and input_name in v else v
                      for v in values]
        data = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in values]
        try:
            outputs = fn(**{input_name: tf.constant(data, dtype=spec.dtype)})
        except tf.errors.InvalidArgumentError as e:
            return self._answer(400, {"error": e.message})
        (output_name, tensor), = outputs.items()
        assert output_name.endswith("_bytes")
        encoded = [{"b64": base64.b64encode(bytes(v)).decode()} for v in tensor.numpy()]
        self._answer(200, {"outputs": encoded} if columnar else {"predictions": encoded})


@pytest.fixture(scope="module")
def server(loaded):
    handler = type("Handler", (_Handler,), {"model": loaded, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield types.SimpleNamespace(
        url=f"http://127.0.0.1:{httpd.server_address[1]}/v1/models/tiny:predict",
        handler=handler)
    httpd.shutdown()
    httpd.server_close()


def test_rest_request_format():
    body = client.build_rest_request([b"\x01\x02", b"abc"], "b2a_bytes")
    assert body == {"signature_name": "b2a_bytes",
                    "instances": [{"b64": "AQI="}, {"b64": "YWJj"}]}
    assert client.build_rest_request(b"abc", columnar=True) == {
        "signature_name": "serving_default", "inputs": [{"b64": "YWJj"}]}


@pytest.mark.parametrize("body", [
    {"predictions": [{"b64": "YWJj"}, {"b64": "AQI="}]},
    {"predictions": [{"image_bytes": {"b64": "YWJj"}}, {"image_bytes": {"b64": "AQI="}}]},
    {"outputs": [{"b64": "YWJj"}, {"b64": "AQI="}]},
    {"outputs": {"image_bytes": [{"b64": "YWJj"}, {"b64": "AQI="}]}},
])
def test_rest_response_formats(body):
    assert client.parse_rest_response(body) == [b"abc", b"\x01\x02"]


def test_rest_response_errors():
    with pytest.raises(client.ServingError, match="refused the request: bad image"):
        client.parse_rest_response({"error": "bad image"})
    with pytest.raises(client.ServingError, match="neither"):
        client.parse_rest_response({"foo": 1})
    with pytest.raises(client.ServingError, match="b64"):
        client.parse_rest_response({"predictions": [[1, 2]]})


def test_rest_client_cli_end_to_end(server, loaded, tmp_path):
    image = rgb(36, 44, seed=4)
    src = tmp_path / "in.jpg"
    src.write_bytes(encode(image, "jpeg"))
    for signature in ("serving_default", "b2a_bytes"):
        out = tmp_path / f"{signature}.png"
        assert client.main(["--url", server.url, "--image", str(src), "--out", str(out),
                            "--signature", signature]) == 0
        assert server.handler.requests[-1]["signature_name"] == signature
        assert "instances" in server.handler.requests[-1]
        png = out.read_bytes()
        assert decode(png).shape == (36, 44, 3)
        assert png == run_bytes(loaded, [src.read_bytes()], signature)[0]
    out = tmp_path / "columnar.png"
    assert client.main(["--url", server.url, "--image", str(src), "--out", str(out),
                        "--columnar"]) == 0
    assert "inputs" in server.handler.requests[-1]
    assert out.read_bytes() == (tmp_path / "serving_default.png").read_bytes()


def test_rest_client_reports_server_errors(server, tmp_path, capsys):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"definitely not a picture")
    with pytest.raises(client.ServingError, match="not a JPEG, PNG, BMP or GIF"):
        client.predict_rest(server.url, [junk.read_bytes()])
    assert client.main(["--url", server.url, "--image", str(junk), "--out",
                        str(tmp_path / "o.png")]) == 1
    assert "not a JPEG, PNG, BMP or GIF" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    wrong = server.url.replace("/tiny:", "/other:")
    with pytest.raises(client.ServingError, match="Servable not found"):
        client.predict_rest(wrong, [b"x"])


def test_grpc_is_optional(tmp_path, capsys):
    src = tmp_path / "in.png"
    src.write_bytes(_png())
    if importlib.util.find_spec("tensorflow_serving") is not None:
        request = client.build_grpc_request([b"abc"], "tiny", "b2a_bytes")
        assert request.model_spec.signature_name == "b2a_bytes"
        assert list(request.inputs["image_bytes"].string_val) == [b"abc"]
        return
    assert client.main(["--grpc", "127.0.0.1:1", "--model", "tiny", "--image", str(src),
                        "--out", str(tmp_path / "o.png")]) == 1
    assert "tensorflow-serving-api" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# TFLite
# ---------------------------------------------------------------------------

def test_upsample_replacement_is_exact():
    x = tf.random.stateless_normal([2, 3, 5, 4], seed=[1, 2])
    assert np.array_equal(ex._upsample_2x_4d(x).numpy(), layers.nearest_upsample_2x(x).numpy())
    original = networks.nearest_upsample_2x
    with ex._tflite_friendly_ops():
        assert networks.nearest_upsample_2x is ex._upsample_2x_4d
    assert networks.nearest_upsample_2x is original


def _calibration():
    for i in range(8):
        yield rgb(40, 40, seed=100 + i)


@pytest.fixture(scope="module")
def scaled_nets():
    """Random weights with He-scaled kernels: activations of order 1 everywhere, as in a
    trained model. With the 0.02 init the decoder's AdaLIN gamma is ~1e-7 and the output is
    nearly constant, which says little about quantization error."""
    tf.random.set_seed(2)
    scaled = Networks(tiny_config(ch=8), discriminators=False)
    rng = np.random.default_rng(0)
    for gen in scaled.generators:
        for v in gen.variables:
            if v.path.endswith("kernel"):
                fan_in = int(np.prod(v.shape[:-1]))
                v.assign(rng.normal(0, np.sqrt(2.0 / fan_in), v.shape).astype(np.float32))
            elif v.path.endswith("bias") or v.path.endswith("beta"):
                v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
    return scaled


@pytest.fixture(scope="module")
def tflite_models(scaled_nets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    config = tiny_config(ch=8)
    out = {}
    for key, q, float_io in (("float32_io", "float32", True), ("float32", "float32", False),
                             ("float16_io", "float16", True), ("dynamic", "dynamic", False),
                             ("int8", "int8", False)):
        out[key] = ex.export_tflite(scaled_nets.genA2B, config,
                                    str(folder / f"a2b_{key}.tflite"), q,
                                    _calibration if q == "int8" else None, float_io=float_io)
    return out


@pytest.fixture(scope="module")
def test_pixels():
    return np.stack([ex.resize_uint8(tf.constant(rgb(48, 48, seed=s)), SIZE).numpy()
                     for s in (21, 22)])


def test_tflite_files_have_builtin_ops_only(tflite_models):
    for key, path in tflite_models.items():
        ops = ex.tflite_ops(path)
        assert "CONV_2D" in ops
        assert ex.non_builtin_ops(ops) == [], key
        assert not any(op.startswith("Flex") for op in ops)
    int8_ops = ex.tflite_ops(tflite_models["int8"])
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=tflite_models["int8"])
    interpreter.allocate_tensors()
    conv_types = {interpreter._get_tensor_details(op["outputs"][0], 0)["dtype"]
                  for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"}
    assert conv_types == {np.int8}, conv_types
    assert int8_ops.count("CONV_2D") == ex.tflite_ops(tflite_models["float32"]).count("CONV_2D")


def test_tflite_uint8_io_is_plain_pixels(tflite_models):
    """uint8 models take and give plain pixels (no quantization parameters to apply)."""
    from ai_edge_litert.interpreter import Interpreter
    for key in ("float32", "dynamic", "int8"):
        runner = Interpreter(model_path=tflite_models[key]).get_signature_runner()
        (inp,) = runner.get_input_details().values()
        outs = runner.get_output_details()
        assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, SIZE, SIZE, 3]
        assert inp["quantization"] == (0.0, 0), key
        assert outs["image"]["dtype"] == np.uint8 and outs["image"]["quantization"] == (0.0, 0)
        assert outs["heatmap"]["dtype"] == np.float32
        assert list(outs["heatmap"]["shape"]) == [1, SIZE // 4, SIZE // 4]


def test_tflite_float32_matches_keras(scaled_nets, tflite_models, test_pixels):
    for pixels in test_pixels:
        x = ex.from_uint8(pixels[None])
        y, _, heat = scaled_nets.genA2B(x, training=False)
        out = ex.run_tflite(tflite_models["float32_io"], x.numpy())
        assert out["image"].dtype == np.float32 and out["image"].shape == (1, SIZE, SIZE, 3)
        assert np.max(np.abs(out["image"] - y.numpy())) <= 1e-4
        assert out["heatmap"].shape == (1, SIZE // 4, SIZE // 4)
        scale = max(1.0, float(np.max(np.abs(heat.numpy()))))
        assert np.max(np.abs(out["heatmap"] - heat.numpy())) <= 1e-4 * scale
        out8 = ex.run_tflite(tflite_models["float32"], pixels)
        assert out8["image"].dtype == np.uint8
        expected = keras_uint8(scaled_nets.genA2B, pixels[None])
        assert np.max(np.abs(out8["image"].astype(int) - expected.astype(int))) <= 1


def test_tflite_float16_within_1e2(scaled_nets, tflite_models, test_pixels):
    x = ex.from_uint8(test_pixels[:1])
    y, _, _ = scaled_nets.genA2B(x, training=False)
    out = ex.run_tflite(tflite_models["float16_io"], x.numpy())
    assert np.max(np.abs(out["image"] - y.numpy())) <= 1e-2


def test_tflite_quantized_psnr(tflite_models, test_pixels):
    reference = [ex.run_tflite(tflite_models["float32"], p)["image"][0] for p in test_pixels]
    for key, bound in (("dynamic", 25.0), ("int8", 18.0)):
        outputs = [ex.run_tflite(tflite_models[key], p) for p in test_pixels]
        assert all(o["image"].dtype == np.uint8 for o in outputs)
        assert all(np.all(np.isfinite(o["heatmap"])) for o in outputs)
        value = np.mean([ex.psnr(o["image"][0], r) for o, r in zip(outputs, reference)])
        print(f"\n[tflite] {key} PSNR vs float32 (tiny random model): {value:.2f} dB")
        assert value > bound, (key, value)


def test_tflite_latency_helper(tflite_models):
    stats = ex.tflite_latency(tflite_models["float32"], runs=2, warmup=1)
    assert stats["runs"] == 2 and stats["threads"] == 2
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert stats["bytes"] == os.path.getsize(tflite_models["float32"])


def test_tflite_refuses_overwrite_and_needs_calibration(scaled_nets, tflite_models, tmp_path):
    with pytest.raises(ex.ExportError, match="already exists"):
        ex.export_tflite(scaled_nets.genA2B, tiny_config(ch=8), tflite_models["float32"])
    with pytest.raises(ex.ExportError, match="representative images"):
        ex.export_tflite(scaled_nets.genA2B, tiny_config(ch=8), str(tmp_path / "x.tflite"), "int8")
    with pytest.raises(ex.ExportError, match="--quantize must be one of"):
        ex.export_tflite(scaled_nets.genA2B, tiny_config(ch=8), str(tmp_path / "x.tflite"), "int4")


def test_tflite_refuses_over_2gb(tmp_path):
    """279M float32 parameters per generator would not fit; float16 would (estimate only)."""
    huge = types.SimpleNamespace(variables=[types.SimpleNamespace(shape=(600_000_000,))])
    with pytest.raises(ex.ExportError, match=r"2\.24 GiB, over the 2 GiB FlatBuffer limit"):
        ex.export_tflite(huge, tiny_config(ch=8), str(tmp_path / "big.tflite"), "float32")
    assert ex.estimate_tflite_bytes(huge, "float16") < ex.FLATBUFFER_LIMIT


def test_tflite_fails_clearly_on_flex_ops(tmp_path):
    import keras

    class NeedsFlex(keras.Model):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(3,), initializer="ones", name="w")

        def call(self, x, training=False):
            y = tf.math.bessel_i1e(x * self.w)  # no TFLite builtin for BesselI1e
            return y, tf.zeros([1, 2]), tf.reduce_sum(y, -1)

    model = NeedsFlex()
    model(tf.zeros([1, SIZE, SIZE, 3]))
    with pytest.raises(ex.ExportError, match="(?s)BesselI1e.*no Flex"):
        ex.export_tflite(model, tiny_config(ch=8), str(tmp_path / "flex.tflite"))
    assert not (tmp_path / "flex.tflite").exists()


# ---------------------------------------------------------------------------
# export_models from a checkpoint
# ---------------------------------------------------------------------------

def _checkpointed(tmp_path, **changes):
    config = tiny_config(ch=8, checkpoint_dir=str(tmp_path / "checkpoints"),
                         dataset_dir=str(tmp_path / "datasets"), **changes)
    tf.random.set_seed(7)
    nets = Networks(config, discriminators=False)
    folder = model_checkpoint_dir(config)
    manager = tf.train.CheckpointManager(make_checkpoint(nets), folder, max_to_keep=1)
    manager.save()
    write_config(folder, config)
    return config, nets


def test_export_models_from_checkpoint(tmp_path, capsys):
    config, nets = _checkpointed(tmp_path)
    export_dir = str(tmp_path / "export")
    readme = str(tmp_path / "readme.md")
    written = ex.export_models(config, export_dir, export_format="all", quantize="float16",
                               version=3, readme_path=readme)
    assert written["saved_model"] == os.path.abspath(os.path.join(export_dir, "tiny", "3"))
    assert set(written) == {"saved_model", "models_config", "readme", "a2b_float16",
                            "b2a_float16"}
    assert written["a2b_float16"].endswith(os.path.join("tflite", "tiny", "3",
                                                        "a2b_float16.tflite"))
    assert 'name: "tiny"' in open(written["models_config"]).read()
    text = open(readme).read()
    assert "-e MODEL_NAME=tiny -t tensorflow/serving" in text
    assert "docker run -p 8501:8501" in capsys.readouterr().out
    # the restored weights are the checkpoint's
    loaded = tf.saved_model.load(written["saved_model"])
    x = tf.random.stateless_uniform([1, SIZE, SIZE, 3], seed=[5, 6], minval=-1, maxval=1)
    for direction, gen in (("a2b", nets.genA2B), ("b2a", nets.genB2A)):
        y = loaded.signatures[direction](images=x)["images"].numpy()
        assert np.max(np.abs(y - gen(x)[0].numpy())) <= 1e-5
    with pytest.raises(ex.ExportError, match=r"tiny/3 already exists.*new --version"):
        ex.export_models(config, export_dir, version=3, readme_path=None)
    with pytest.raises(ex.ExportError, match="already exists"):
        ex.export_models(config, export_dir, export_format="tflite", quantize="float16",
                         version=3)


def test_export_models_takes_options_from_config(nets, tmp_path):
    if not all(hasattr(Config, f) for f in ("export_dir", "export_format", "version")):
        pytest.skip("Config has no export flags")
    config = tiny_config(ch=8, export_dir=str(tmp_path / "out"), export_format="saved_model",
                         version=7)
    written = ex.export_models(config, nets=nets, readme_path=None, model_name="mine")
    assert written["saved_model"] == str(tmp_path / "out" / "mine" / "7")
    assert 'name: "mine"' in open(written["models_config"]).read()


def test_export_models_argument_errors(tmp_path):
    config = tiny_config(ch=8, checkpoint_dir=str(tmp_path / "none"))
    with pytest.raises(ex.ExportError, match="--export_format"):
        ex.export_models(config, str(tmp_path), export_format="onnx")
    with pytest.raises(ex.ExportError, match="--quantize"):
        ex.export_models(config, str(tmp_path), export_format="tflite", quantize="int4")
    with pytest.raises(ex.ExportError, match="--version"):
        ex.export_models(config, str(tmp_path), version=0)
    with pytest.raises(ex.ExportError, match="--max_pixels"):
        ex.export_models(config, str(tmp_path), max_pixels=0)
    from ugatit_tf.model.checkpoints import CheckpointError
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ex.export_models(config, str(tmp_path))


@pytest.mark.slow
def test_export_models_all_quantizations_with_dataset(tmp_path):
    config, nets = _checkpointed(tmp_path)
    for split, seed in (("trainA", 0), ("trainB", 50)):
        folder = tmp_path / "datasets" / "tiny" / split
        folder.mkdir(parents=True)
        for i in range(4):
            (folder / f"{i}.png").write_bytes(encode(rgb(40, 40, seed=seed + i), "png"))
    written = ex.export_models(config, str(tmp_path / "export"), export_format="tflite",
                               quantize="all", readme_path=None)
    assert set(written) == {f"{d}_{q}" for d in ex.DIRECTIONS for q in ex.QUANTIZATIONS}
    sizes = {k: os.path.getsize(v) for k, v in written.items()}
    assert sizes["a2b_float16"] < sizes["a2b_float32"]
    pixels = ex.resize_uint8(tf.constant(rgb(40, 40, seed=3)), SIZE).numpy()
    for key, path in written.items():
        assert ex.non_builtin_ops(ex.tflite_ops(path)) == []
        out = ex.run_tflite(path, pixels)
        assert out["image"].shape == (1, SIZE, SIZE, 3) and out["image"].dtype == np.uint8
    # no calibration images for int8 -> a clear error naming the flag
    empty = tiny_config(ch=8, checkpoint_dir=config.checkpoint_dir, dataset_dir=str(tmp_path / "x"))
    with pytest.raises(ex.ExportError, match="--representative_dir"):
        ex.export_models(empty, str(tmp_path / "export2"), export_format="tflite",
                         quantize="int8", readme_path=None)
