"""The security review's findings: predict bodies bounded before parsing, malformed JSON as
400, admission control (503 at once, the page stays responsive), work off the event loop,
cross-site requests and DNS rebinding, and no internals in the answers to strangers. Most run
on a server over a fake model (no TensorFlow model, seconds)."""

import asyncio
import concurrent.futures
import json
import threading
import time
import types

import numpy as np
import pytest
import requests
from starlette.responses import JSONResponse

from ugatit_tf.serve import app as serve_app
from ugatit_tf.serve import rest, uploads
from ugatit_tf.serve.models import PredictError, RemoteModel

from .conftest import start_server

BUSY = "the server is busy (64 requests waiting); try again in a moment"
BYTES = {"image_bytes": ("string", [None])}
FLOATS = {"images": ("float32", [None, 2, 2, 3])}


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


class FakeModel:
    """Signatures a2b (float 2x2x3) and serving_default (bytes), no batch limit of its own."""
    # `gate` holds every call while cleared; metadata() records whether it ran on the loop

    img_size, source, version = 2, "fake", "1"

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.metadata_on_loop = []

    def signature_names(self):
        return ["a2b", "serving_default"]

    def input_specs(self, signature):
        return FLOATS if signature == "a2b" else BYTES

    def predict(self, signature, inputs):
        self.gate.wait(60)
        rows = len(next(iter(inputs.values())))
        if signature == "a2b":
            return {"images": np.zeros((rows, 2, 2, 3), np.float32)}
        return {"image_bytes": np.array([b"png"] * rows, dtype=object)}

    def metadata(self):
        self.metadata_on_loop.append(_on_loop())
        return {"signature_def": {"signature_def": {}}}


@pytest.fixture
def fake():
    model = FakeModel()
    service = serve_app.Service(model, "fake", 1000, 10**6, max_batch=16)
    url, stop = start_server(service)
    yield types.SimpleNamespace(url=url, service=service, model=model)
    model.gate.set()
    stop()
    service.close()


def predict(url, body, **kw):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url + "/v1/models/fake:predict", data=data, timeout=60, **kw)


def post_form(url, filename=b"a.jpg", data=b"", content_type="multipart/form-data",
              headers=None):
    body = (b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="' + filename
            + b'"\r\n\r\n' + data + b"\r\n--xyz--\r\n")
    headers = dict(headers or {}, **{"Content-Type": f"{content_type}; boundary=xyz"})
    return requests.post(url + "/api/translate", data=body, headers=headers, timeout=60)


# ---------------------------------------------------------------------------
# 1. the predict body's size in values, and its rows, before any conversion
# ---------------------------------------------------------------------------

def test_predict_values_are_counted_before_parsing(fake):
    many = predict(fake.url, {"instances": [""] * 300})  # 299 commas; 16 images hold 192
    assert many.status_code == 400
    assert many.json() == {"error": "JSON Value: the request body has more than 256 values, "
                                    "more than 16 images (max_batch) of 2x2x3 hold"}
    largest = {"signature_name": "a2b", "instances": np.zeros((16, 2, 2, 3)).tolist()}
    assert predict(fake.url, largest).status_code == 200  # the largest legitimate request


@pytest.mark.parametrize("body, message", [
    ({"instances": [{"b64": "eA=="}] * 17},
     "a2b_bytes: 17 images in one request, more than the limit of 16 (max_batch)"),
    ({"inputs": {"image_bytes": ["x"] * 20}},
     "a2b_bytes: 20 images in one request, more than the limit of 16 (max_batch)"),
    ({"signature_name": "a2b", "inputs": np.zeros((17, 2, 2, 3)).tolist()},
     "a2b: 17 images in one request, more than the limit of 16 (max_batch)"),
])
def test_predict_rows_are_counted_before_conversion(fake, monkeypatch, body, message):
    def no_conversion(*args):
        raise AssertionError("converted before the rows were counted")
    monkeypatch.setattr(rest, "_to_array", no_conversion)
    with pytest.raises(PredictError) as e:
        fake.service.predict(json.dumps(body).encode())
    assert (e.value.status, e.value.message) == (400, message)


# ---------------------------------------------------------------------------
# 2. malformed JSON: 400, not 500
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    (b'{"instances":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "JSON Parse error: the request body is nested too deeply"),
    (b'{"instances":["\\udcff"]}', "JSON Parse error: the request body has a string that is "
                                   "not valid Unicode (a lone surrogate) in image_bytes[0]"),
    (b'{"signature_name":"\\udcff\\n","instances":[]}',
     'Serving signature name: "??" not found in signature def'),
])
def test_malformed_json_is_400(fake, body, message):
    answer = predict(fake.url, body)
    assert (answer.status_code, answer.json()) == (400, {"error": message})


# ---------------------------------------------------------------------------
# 3. admission: 503 at once past 64 waiting requests, the page answers meanwhile
# ---------------------------------------------------------------------------

def test_overload_is_refused_at_once_and_the_page_stays_responsive(fake):
    fake.model.gate.clear()  # every model call waits
    body = {"instances": [{"b64": "eA=="}]}
    with concurrent.futures.ThreadPoolExecutor(70) as pool:
        futures = [pool.submit(predict, fake.url, body) for _ in range(70)]
        refused = []
        for done in concurrent.futures.as_completed(futures, timeout=30):
            refused.append(done.result())
            if len(refused) == 6:
                break
        assert [(r.status_code, r.json()["error"]) for r in refused] == [(503, BUSY)] * 6
        started = time.monotonic()
        for path in ("/", "/static/app.js", "/api/info"):
            assert requests.get(fake.url + path, timeout=10).status_code == 200
        assert time.monotonic() - started < 5
        fake.model.gate.set()
        answers = [f.result(timeout=60) for f in futures]
    assert sorted(a.status_code for a in answers) == [200] * 64 + [503] * 6
    assert fake.service.waiting == 0


def test_serve_passes_uvicorn_limit_concurrency(monkeypatch):
    import uvicorn
    seen = {}

    class Server:
        def __init__(self, config):
            seen["config"] = config

        def run(self, sockets):
            pass
    monkeypatch.setattr(uvicorn, "Server", Server)
    monkeypatch.setattr(serve_app, "load_model", lambda config: FakeModel())
    from .conftest import tiny_config
    assert serve_app.serve(tiny_config(port=0)) == 0
    assert seen["config"].limit_concurrency == serve_app.LIMIT_CONCURRENCY == 256


# ---------------------------------------------------------------------------
# 4. big answers rendered off the event loop
# ---------------------------------------------------------------------------

def test_predict_answer_and_metadata_are_built_off_the_event_loop(fake, monkeypatch):
    rendered = []
    render = JSONResponse.render

    def recording(self, content):
        rendered.append((sorted(content) if isinstance(content, dict) else None, _on_loop()))
        return render(self, content)
    monkeypatch.setattr(JSONResponse, "render", recording)
    assert predict(fake.url, {"instances": [{"b64": "eA=="}]}).status_code == 200
    assert requests.get(fake.url + "/v1/models/fake/metadata", timeout=30).status_code == 200
    assert (["predictions"], False) in rendered and (["metadata", "model_spec"], False) in rendered
    assert not [keys for keys, on_loop in rendered if on_loop and keys != ["error"]]
    assert fake.model.metadata_on_loop == [False]


# ---------------------------------------------------------------------------
# 5. cross-site requests and DNS rebinding
# ---------------------------------------------------------------------------

def test_loopback_server_checks_the_host_header(fake):
    port = fake.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        answer = requests.get(fake.url + "/api/info", headers={"Host": host}, timeout=10)
        assert answer.status_code == 200, host
    rebound = requests.get(fake.url + "/api/info", headers={"Host": f"evil.example:{port}"},
                           timeout=10)
    assert (rebound.status_code, rebound.text) == (400, "Invalid host header")
    assert serve_app.is_loopback("127.0.0.1") and serve_app.is_loopback("::1")
    assert not serve_app.is_loopback("0.0.0.0") and not serve_app.is_loopback("192.168.1.2")


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"},
                                     {"Origin": "http://localhost:1"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_cross_site_posts_are_refused(fake, headers):
    answer = post_form(fake.url, headers=headers)
    assert (answer.status_code, answer.json()) == (403, {"error": serve_app.CROSS_SITE})
    answer = predict(fake.url, {"instances": [[0.0]]}, headers=headers)  # REST predict too
    assert (answer.status_code, answer.json()) == (403, {"error": serve_app.CROSS_SITE})


def test_same_origin_and_programs_pass_the_origin_check(fake):
    same = {"Origin": fake.url, "Sec-Fetch-Site": "same-origin"}
    for headers in (same, {}):
        answer = post_form(fake.url, headers=headers)
        assert (answer.status_code, answer.json()) == (400, {"error": "a.jpg: the file is empty"})


# ---------------------------------------------------------------------------
# 6, 7. the form's Content-Type in any case; file names safe to show
# ---------------------------------------------------------------------------

def test_content_type_is_case_insensitive(fake):
    answer = post_form(fake.url, content_type="Multipart/Form-Data")
    assert (answer.status_code, answer.json()) == (400, {"error": "a.jpg: the file is empty"})


@pytest.mark.parametrize("filename, shown", [
    (b"a\nb.jpg", "a?b.jpg"), (b"a\x1b[31mb.jpg", "a?[31mb.jpg"),
    (b"x" * 300 + b".jpg", "x" * 97 + "..."),
])
def test_file_names_in_messages_are_sanitized(fake, filename, shown):
    answer = post_form(fake.url, filename=filename, data=b"just some text")
    assert answer.status_code == 415
    assert answer.json()["error"] == (f"{shown}: not an image this page can read; send a "
                                      f"JPEG, PNG, GIF, BMP or WebP photo")


# ---------------------------------------------------------------------------
# 8. no internals in the answers
# ---------------------------------------------------------------------------

def test_decode_errors_hide_tensorflow_internals():
    with pytest.raises(PredictError) as e:
        uploads.decode_upload(b"\xff\xd8\xff\xe0" + b"\0" * 100, "x.jpg", 10**6)
    assert e.value.message == ("x.jpg: cannot be decoded (jpeg::Uncompress failed. Invalid "
                               "JPEG data or crop window.); is the file complete?")


def test_unreachable_tf_serving_is_502_without_details(capsys):
    model = RemoteModel.__new__(RemoteModel)
    model.url, model.timeout, model.session = "http://127.0.0.1:1/v1/models/x", 5, \
        requests.Session()
    with pytest.raises(PredictError) as e:
        model.forward(":predict", b"{}")
    assert (e.value.status, e.value.message) == (
        502, "the TF Serving model behind this page cannot be reached")
    assert "http://127.0.0.1:1/v1/models/x cannot be reached: " in capsys.readouterr().err


def test_internal_errors_name_only_the_exception_type(fake, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("secret detail /home/someone/model")
    monkeypatch.setattr(fake.service, "translate_upload", broken)
    answer = post_form(fake.url, data=b"x")
    assert (answer.status_code, answer.json()) == (
        500, {"error": "internal error (details in the server's log): RuntimeError"})
    assert "secret detail" in capsys.readouterr().err
    assert requests.get(fake.url + "/api/info", timeout=10).status_code == 200


@pytest.mark.slow
def test_the_page_posting_from_its_own_origin_works(server):
    from .conftest import astronaut_jpeg
    headers = {"Origin": server, "Sec-Fetch-Site": "same-origin"}
    answer = requests.post(server + "/api/translate", files={"image": ("a.jpg", astronaut_jpeg())},
                           data={"face_crop": "false"}, headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"


def test_an_unknown_model_name_is_shown_on_one_line(fake):
    answer = requests.get(fake.url + "/v1/models/a%0Ab%1B", timeout=60)
    assert answer.status_code == 404
    assert answer.json()["error"] == ("Servable not found for request: Latest(a?b?); this "
                                      "server serves fake")
