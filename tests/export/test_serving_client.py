"""tools/serving_client.py against an in-test HTTP responder that implements TF Serving's
documented REST predict protocol on top of the exported SavedModel (TF Serving itself is not
available here)."""

import base64
import http.server
import importlib.util
import json
import os
import threading
import types

import pytest
import tensorflow as tf

from tests.export.helpers import decode, encode, rgb, run_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def _load_client():
    spec = importlib.util.spec_from_file_location(
        "serving_client", os.path.join(ROOT, "tools", "serving_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()


def _png():
    return encode(rgb(20, 20, seed=1), "png")


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


def test_client_flags_are_checked_before_any_request(tmp_path, capsys):
    """One line, exit 2, nothing sent and nothing written: before, a bad --out was found after
    the prediction and --timeout 0 ended in a traceback from requests."""
    src = tmp_path / "in.png"
    src.write_bytes(_png())
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    url = "http://127.0.0.1:1/v1/models/tiny:predict"  # nothing listens: never reached
    base = ["--url", url, "--image", str(src)]
    for argv, message in (
            (base + ["--out", str(tmp_path), "--timeout", "5"],
             f"--out {tmp_path}: is a folder; give the PNG's file name"),
            (base + ["--out", str(notes / "x.png")],
             f"--out {notes / 'x.png'}: {notes} is a file, not a folder"),
            (base + ["--out", "o.png", "--timeout", "0"],
             "--timeout must be a number of seconds > 0, got 0.0"),
            (["--url", url, "--image", str(tmp_path / "nothere.png"), "--out", "o.png"],
             f"--image {tmp_path / 'nothere.png'}: does not exist"),
            (["--url", url, "--image", str(tmp_path), "--out", "o.png"],
             f"--image {tmp_path}: is not a file")):
        with pytest.raises(SystemExit) as e:
            client.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.splitlines() == [f"{client._Parser().prog}: error: "
                                                          f"{message}"], err
    assert sorted(os.listdir(tmp_path)) == ["in.png", "notes.txt"]
