"""The HTTP API on a running server (tiny random model): /api/translate equals the exported
SavedModel, TF Serving's REST predict works with tools/serving_client.py unchanged, refusals are
one-line JSON errors with 400/404/413/415 and never take the server down, requests are batched,
and --serving_url proxies to another server."""

import base64
import concurrent.futures
import http.client
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a SavedModel export and a server: about a minute
import requests
import skimage.data
import tensorflow as tf

from ugatit_tf.infer.photos import PhotoTranslator
from ugatit_tf.serve import app as serve_app
from ugatit_tf.serve.models import RemoteModel

from .conftest import (MAX_PIXELS, MAX_UPLOAD, SIZE, astronaut_jpeg, decode_png, jpeg,
                       png_bytes, saved_model_png, start_server)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def translate(url, data, name="photo.jpg", **fields):
    return requests.post(url + "/api/translate", files={"image": (name, data)}, data=fields,
                         timeout=60)


def from_data_url(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return decode_png(base64.b64decode(url[len(prefix):]))


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_whole_photo_equals_the_saved_model(server, saved_model, direction):
    data = astronaut_jpeg()
    answer = translate(server, data, direction=direction, face_crop="false")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["x-mode"] == "photo"
    expected = saved_model_png(saved_model, data, f"{direction}_bytes")
    assert expected.shape == (512, 512, 3)
    np.testing.assert_array_equal(decode_png(answer.content), expected)


def test_face_crop_equals_the_photo_pipeline_on_the_saved_model(server, saved_model):
    """Face mode: the same crop -> SavedModel a2b -> paste-back as the --input photo path."""
    rgb = skimage.data.astronaut()
    data = png_bytes(rgb)
    answer = translate(server, data, face_crop="true", paste_back="true", format="json")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["mode"], body["faces"], body["width"], body["height"]) == ("face", 1, 512, 512)
    fn = saved_model.loaded.signatures["a2b"]

    def model(batch):
        out = fn(images=tf.constant(batch))
        return out["images"].numpy(), out["heatmaps"].numpy()
    expected = PhotoTranslator(model, img_size=SIZE, face_crop=True, paste_back=True,
                               fallback="center", make_sheet=False).translate_photo(rgb)
    np.testing.assert_array_equal(from_data_url(body["output"]), expected.output)
    np.testing.assert_array_equal(from_data_url(body["attention"]), expected.faces[0].overlay)


def test_no_face_falls_back_to_the_centre(server):
    flat = np.full((80, 120, 3), 90, np.uint8)
    body = translate(server, png_bytes(flat), format="json").json()
    assert (body["mode"], body["faces"], body["width"], body["height"]) == ("center", 0,
                                                                           SIZE, SIZE)
    assert from_data_url(body["attention"]).shape == (SIZE, SIZE, 3)


def test_exif_turned_photo_is_translated_upright(server, saved_model):
    from PIL import Image
    import io
    rgb = skimage.data.astronaut()[:, :400]  # 512 high, 400 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown after a 90 degree clockwise turn
    buf = io.BytesIO()
    Image.fromarray(np.rot90(rgb, 1)).save(buf, format="PNG", exif=exif)
    answer = translate(server, buf.getvalue(), face_crop="false")
    assert answer.status_code == 200
    np.testing.assert_array_equal(decode_png(answer.content),
                                  saved_model_png(saved_model, png_bytes(rgb)))


def _bomb_png():
    import struct
    import zlib
    chunk = b"IHDR" + struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 64)


@pytest.mark.parametrize("make, fields, status, message", [
    (lambda: b"just some text", {}, 415,
     "notes.jpg: not an image this page can read; send a JPEG, PNG, GIF, BMP or WebP photo"),
    (lambda: b"", {}, 400, "notes.jpg: the file is empty"),
    (lambda: b"\xff\xd8\xff" + b"\0" * (MAX_UPLOAD + 100), {}, 413, None),
    (_bomb_png, {}, 413, None),
    (lambda: astronaut_jpeg()[:400], {}, 400, None),
    (astronaut_jpeg, {"direction": "sideways"}, 400,
     "form field direction must be a2b or b2a, got 'sideways'"),
    (astronaut_jpeg, {"face_crop": "maybe"}, 400,
     "form field face_crop must be true or false, got 'maybe'"),
    (astronaut_jpeg, {"format": "gif"}, 400, "form field format must be png or json, got 'gif'"),
])
def test_refusals_are_one_line_json(server, make, fields, status, message):
    answer = translate(server, make(), name="notes.jpg", **fields)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert "\n" not in error
    if message:
        assert error == message
    elif status == 413:
        assert error.startswith(("notes.jpg: ", "upload: the request is"))
        assert "limit" in error
    else:
        assert error.startswith("notes.jpg: ")
    assert translate(server, astronaut_jpeg()).status_code == 200  # still serving


def test_request_shape_refusals(server):
    answer = requests.post(server + "/api/translate", data={"direction": "a2b"})
    assert (answer.status_code, answer.json()["error"]) == (
        415, "send the photo as multipart/form-data in a field named image")
    answer = requests.post(server + "/api/translate", files={"photo": ("a.jpg", b"x")})
    assert (answer.status_code, answer.json()["error"]) == (
        400, "no photo: send it in a form field named image")
    multipart = {"Content-Type": "multipart/form-data; boundary=xyz"}
    head = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    chunks = iter([head] + [b"x" * MAX_UPLOAD] * 2)  # chunked: no Content-Length
    answer = requests.post(server + "/api/translate", data=chunks, headers=multipart)
    assert answer.status_code == 413
    assert answer.json()["error"].startswith("upload: the request is more than the limit")
    # a declared length over the limit is refused before the body is read
    host, port = server.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/api/translate")
    connection.putheader("Content-Type", multipart["Content-Type"])
    connection.putheader("Content-Length", str(10**9))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"].startswith("upload: the request is 1000000000")
    connection.close()


def test_page_and_static_files_are_served(server):
    page = requests.get(server + "/")
    assert page.status_code == 200 and "<title>Photo to anime" in page.text
    for name in ("app.js", "style.css"):
        assert requests.get(f"{server}/static/{name}").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything is local
    info = requests.get(server + "/api/info").json()
    assert (info["model"], info["img_size"], info["max_upload_bytes"]) == ("tiny", SIZE,
                                                                          MAX_UPLOAD)


# ---------------------------------------------------------------------------
# TF Serving's REST API
# ---------------------------------------------------------------------------

def test_model_status_and_metadata(server, saved_model):
    assert requests.get(server + "/v1/models/tiny").json() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                          "error_message": ""}}]}
    meta = requests.get(server + "/v1/models/tiny/metadata").json()
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == set(saved_model.loaded.signatures)
    dims = [d["size"] for d in defs["a2b"]["inputs"]["images"]["tensor_shape"]["dim"]]
    assert dims == ["-1", str(SIZE), str(SIZE), "3"]
    missing = requests.get(server + "/v1/models/other")
    assert missing.status_code == 404 and "Servable not found" in missing.json()["error"]


@pytest.mark.parametrize("signature, columnar", [("serving_default", False),
                                                 ("b2a_bytes", True)])
def test_serving_client_works_unchanged(server, saved_model, tmp_path, signature, columnar):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(astronaut_jpeg())
    out = tmp_path / "out.png"
    command = [sys.executable, os.path.join(ROOT, "tools", "serving_client.py"),
               "--url", f"{server}/v1/models/tiny:predict", "--image", str(photo),
               "--out", str(out), "--signature", signature] + (["--columnar"] if columnar else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(decode_png(out.read_bytes()),
                                  saved_model_png(saved_model, photo.read_bytes(), signature))


def test_float_signature_over_rest(server, saved_model):
    x = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    answer = requests.post(server + "/v1/models/tiny:predict",
                           json={"signature_name": "a2b", "instances": x.tolist()}).json()
    expected = saved_model.loaded.signatures["a2b"](images=tf.constant(x))
    rows = answer["predictions"]
    assert len(rows) == 2 and set(rows[0]) == {"images", "cam_logits", "heatmaps"}
    np.testing.assert_allclose(np.array([r["images"] for r in rows]),
                               expected["images"].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.array([r["heatmaps"] for r in rows]),
                               expected["heatmaps"].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("body, status, message", [
    ({"instances": [{"b64": base64.b64encode(b"GIF89a").decode()},
                    {"b64": base64.b64encode(b"nope").decode()}]}, 400, "image_bytes[0]: "),
    ({"signature_name": "sketch", "instances": []}, 400,
     "Serving signature name: \"sketch\" not found in signature def"),
    ({"instances": [{"b64": base64.b64encode(b"x").decode()}] * 17}, 400,
     "a2b_bytes: 17 images in one request, more than the limit of 16 (max_batch)"),
])
def test_predict_errors(server, body, status, message):
    answer = requests.post(server + "/v1/models/tiny:predict", json=body)
    assert answer.status_code == status
    assert answer.json()["error"].startswith(message), answer.json()
    bad_json = requests.post(server + "/v1/models/tiny:predict", data=b"{not json")
    assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("JSON Parse error")
    other = requests.post(server + "/v1/models/other:predict", json={"instances": []})
    assert other.status_code == 404


def test_concurrent_requests_are_batched_and_correct(server, service, saved_model):
    rng = np.random.default_rng(3)
    photos = [jpeg(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(8)]
    calls = service.batcher.calls

    def one(data):
        body = {"instances": [{"b64": base64.b64encode(data).decode()}]}
        return requests.post(server + "/v1/models/tiny:predict", json=body, timeout=60).json()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, photos * 3))
    for data, answer in zip(photos * 3, answers):
        png = base64.b64decode(answer["predictions"][0]["b64"])
        assert_same_image_up_to_batch_rounding(decode_png(png), saved_model_png(saved_model, data))
    assert service.batcher.calls - calls < len(answers)  # some requests shared a model call


def assert_same_image_up_to_batch_rounding(batched, single):
    """A row of a batched call equals the same image run alone up to float32 rounding: from
    8 rows on, oneDNN's and Eigen's kernels sum in another order (measured: at most 1.2e-6 on
    outputs in [-1, 1], batch 8 and 16). As bytes, round((y + 1) * 127.5), that moves a value by
    at most 1 level, and only one within 1.2e-6 * 127.5 = 1.5e-4 of a rounding boundary: about 3
    values in 10,000. Another photo's answer, or a wrong row, differs almost everywhere."""
    diff = np.abs(batched.astype(int) - single.astype(int))
    assert diff.max() <= 1, diff.max()
    assert np.count_nonzero(diff) <= max(3, diff.size // 200), np.count_nonzero(diff)


def test_serving_url_uses_another_server(server, saved_model):
    """--serving_url: the page and the REST API of a second server run on the first one (which
    speaks TF Serving's REST API, as TF Serving does)."""
    model = RemoteModel(server + "/v1/models/tiny")
    assert model.img_size == SIZE
    proxy = serve_app.Service(model, "tiny", MAX_UPLOAD, MAX_PIXELS)
    url, stop = start_server(proxy)
    try:
        data = astronaut_jpeg()
        answer = translate(url, data, face_crop="false", format="json")
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(from_data_url(answer.json()["output"]),
                                      saved_model_png(saved_model, data))
        refused = requests.post(url + "/v1/models/tiny:predict",
                                json={"instances": [{"b64": "bm9wZQ=="}]})
        assert refused.status_code == 400 and refused.json()["error"].startswith(
            "image_bytes[0]: ")
        assert requests.get(url + "/v1/models/tiny").json()["model_version_status"]
    finally:
        stop()
        proxy.close()


def test_export_dir_serves_the_saved_model(saved_model):
    """--export_dir: the export root, the model folder or the version folder all work."""
    from ugatit_tf.serve.models import find_saved_model, load_model
    from .conftest import tiny_config
    version = saved_model.path
    root = os.path.dirname(os.path.dirname(version))
    for folder in (root, os.path.dirname(version), version):
        assert find_saved_model(folder, "tiny") == version
    model = load_model(tiny_config(export_dir=root))
    assert (model.img_size, model.version, model.source) == (SIZE, "1", f"SavedModel {version}")
    service = serve_app.Service(model, "tiny", MAX_UPLOAD, MAX_PIXELS)
    try:
        data = astronaut_jpeg()
        result = service.translate_upload(data, "a.jpg", serve_app.Options(face_crop=False))
        np.testing.assert_array_equal(decode_png(result.output_png),
                                      saved_model_png(saved_model, data))
    finally:
        service.close()
