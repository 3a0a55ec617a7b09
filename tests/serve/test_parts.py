"""The serve package's parts without a server: TF Serving's JSON format, the batcher, the
upload guards and EXIF orientation (against Pillow's exif_transpose)."""

import base64
import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from ugatit_tf.serve import rest, uploads
from ugatit_tf.serve.batcher import Batcher
from ugatit_tf.serve.models import PredictError, clean_tf_message

BYTES_SPEC = {"image_bytes": ("string", [None])}
FLOAT_SPEC = {"images": ("float32", [None, 2, 2, 3])}


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


# ---------------------------------------------------------------------------
# TF Serving's REST format
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"instances": [b64(b"one"), b64(b"two")]},
    {"instances": [{"image_bytes": b64(b"one")}, {"image_bytes": b64(b"two")}]},
    {"inputs": [b64(b"one"), b64(b"two")]},
    {"inputs": {"image_bytes": [b64(b"one"), b64(b"two")]}},
])
def test_parse_request_formats(body):
    inputs, columnar = rest.parse_request(body, BYTES_SPEC)
    assert list(inputs["image_bytes"]) == [b"one", b"two"]
    assert columnar == ("inputs" in body)


def test_parse_float_instances_and_shape_check():
    x = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3) / 12
    inputs, _ = rest.parse_request({"instances": x.tolist()}, FLOAT_SPEC)
    np.testing.assert_array_equal(inputs["images"], x)
    with pytest.raises(PredictError) as e:
        rest.parse_request({"instances": np.zeros((1, 3, 2, 3)).tolist()}, FLOAT_SPEC)
    assert e.value.status == 400
    assert str(e.value) == ("input images: shape [1, 3, 2, 3] does not match the signature's "
                            "[N, 2, 2, 3]")


@pytest.mark.parametrize("body, message", [
    ({}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [], "inputs": []}, "Not both 'inputs' and 'instances' keys may be given"),
    ({"instances": []}, "instances: expected a non-empty list"),
    ({"instances": [{"b64": "%%%"}]}, "image_bytes[0]: invalid base64 in {\"b64\": ...}"),
    ({"instances": [{"other": 1}]}, "instances[0]: expected the key(s) image_bytes"),
    ({"instances": [3]}, "image_bytes[0]: expected {\"b64\": \"...\"} or a string"),
    ([1, 2], "JSON Value: the request body must be an object"),
])
def test_parse_request_errors(body, message):
    with pytest.raises(PredictError) as e:
        rest.parse_request(body, BYTES_SPEC)
    assert (e.value.status, str(e.value)) == (400, message)


def test_format_response_rows_and_columns():
    one = {"image_bytes": np.array([b"png1", b"png2"], dtype=object)}
    assert rest.format_response(one, columnar=False) == {
        "predictions": [b64(b"png1"), b64(b"png2")]}
    assert rest.format_response(one, columnar=True) == {"outputs": [b64(b"png1"), b64(b"png2")]}
    many = {"images": np.zeros((2, 1)), "cam_logits": np.ones((2, 2))}
    assert rest.format_response(many, columnar=False) == {"predictions": [
        {"cam_logits": [1.0, 1.0], "images": [0.0]}, {"cam_logits": [1.0, 1.0], "images": [0.0]}]}
    assert rest.format_response(many, columnar=True) == {
        "outputs": {"cam_logits": [[1.0, 1.0], [1.0, 1.0]], "images": [[0.0], [0.0]]}}


def test_clean_tf_message():
    raw = ("Graph execution error:\n\nDetected at node map/while/Assert_2/Assert defined at "
           "(most recent call last):\n  File \"x.py\", line 1\n\nassertion failed: "
           "[image_bytes[3]: not a JPEG, PNG, BMP or GIF image (undecodable bytes)]\n\t "
           "[[{{node map/while/Assert_2/Assert}}]] [Op:__inference_fn_7105]")
    assert clean_tf_message(raw) == ("image_bytes[3]: not a JPEG, PNG, BMP or GIF image "
                                     "(undecodable bytes)")
    assert clean_tf_message("Invalid PNG data, size 90\n\t [[{{node DecodePng}}]]") == \
        "Invalid PNG data, size 90"


# ---------------------------------------------------------------------------
# Batcher
# ---------------------------------------------------------------------------

class FakeModel:
    """Doubles its input; refuses negative values (as a signature refuses a bad image),
    naming the row; records the batch size of every call."""

    def __init__(self, delay=0.05):
        self.delay, self.sizes, self.lock = delay, [], threading.Lock()

    def predict(self, signature, inputs):
        x = inputs["x"]
        with self.lock:
            self.sizes.append(len(x))
        time.sleep(self.delay)
        bad = np.flatnonzero(x < 0)
        if len(bad):
            raise PredictError(400, f"x[{bad[0]}]: negative")
        return {"y": x * 2, "signature": np.array([signature] * len(x))}


def _submit_all(batcher, jobs):
    results = [None] * len(jobs)

    def run(i, signature, x):
        try:
            results[i] = batcher.submit(signature, {"x": np.array(x, np.float32)})
        except PredictError as e:
            results[i] = e
    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_batcher_batches_and_splits_answers():
    model = FakeModel()
    batcher = Batcher(model.predict, max_batch=16, max_delay=0.05)
    try:
        model.delay = 0.3  # the first call holds the worker while the others queue up
        jobs = [("a2b", [float(i), float(i) + 0.5]) for i in range(8)]
        results = _submit_all(batcher, jobs)
    finally:
        batcher.close()
    for (_, x), result in zip(jobs, results):
        np.testing.assert_array_equal(result["y"], np.array(x) * 2)
    assert sum(model.sizes) == 16 and max(model.sizes) > 2, model.sizes  # some were combined
    assert batcher.calls == len(model.sizes) < len(jobs)


def test_batcher_keeps_signatures_apart_and_respects_max_batch():
    model = FakeModel(delay=0.2)
    batcher = Batcher(model.predict, max_batch=3, max_delay=0.05)
    try:
        jobs = [("a2b", [1.0, 2.0]), ("b2a", [3.0]), ("a2b", [4.0]), ("a2b", [5.0, 6.0]),
                ("b2a", [7.0])]
        results = _submit_all(batcher, jobs)
    finally:
        batcher.close()
    for (signature, x), result in zip(jobs, results):
        assert list(result["signature"]) == [signature] * len(x)
        np.testing.assert_array_equal(result["y"], np.array(x) * 2)
    assert max(model.sizes) <= 3


def test_a_bad_request_in_a_batch_fails_alone_with_its_own_message():
    model = FakeModel()
    batcher = Batcher(model.predict, max_batch=16, max_delay=0.1)
    try:
        results = _submit_all(batcher, [("a2b", [1.0, 2.0]), ("a2b", [3.0, -1.0]),
                                        ("a2b", [5.0])])
    finally:
        batcher.close()
    np.testing.assert_array_equal(results[0]["y"], [2.0, 4.0])
    assert isinstance(results[1], PredictError) and str(results[1]) == "x[1]: negative"
    np.testing.assert_array_equal(results[2]["y"], [10.0])


def test_batcher_refuses_when_the_queue_is_full():
    model = FakeModel(delay=0.5)
    batcher = Batcher(model.predict, max_batch=1, max_delay=0.0, max_pending=1)
    try:
        results = _submit_all(batcher, [("a2b", [1.0])] * 4)
    finally:
        batcher.close()
    refused = [r for r in results if isinstance(r, PredictError)]
    assert refused and all(r.status == 503 and "the server is busy" in str(r) for r in refused)
    assert any(isinstance(r, dict) for r in results)


# ---------------------------------------------------------------------------
# Upload guards
# ---------------------------------------------------------------------------

def _encoded(fmt, size=(40, 30), **kw):
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, kind", [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"),
                                       ("BMP", "bmp"), ("WEBP", "webp")])
def test_sniff_and_accept(fmt, kind):
    data = _encoded(fmt)
    assert uploads.check_upload(data, "x.bin", 10**6, 10**6) == kind  # the name does not matter
    rgb, orientation = uploads.decode_upload(data, "x.bin", 10**6)
    assert rgb.shape == (30, 40, 3) and orientation == 1


def _png_declaring(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 20)


@pytest.mark.parametrize("data, status, message", [
    (b"", 400, "me.jpg: the file is empty"),
    (b"x" * 2001, 413, "me.jpg: 2001 bytes, more than the limit of 2000 bytes for one photo"),
    (b"hello, I am text", 415, "me.jpg: not an image this page can read; send a JPEG, PNG, "
                               "GIF, BMP or WebP photo"),
    (b"\0\0\0\x18ftypheic" + b"\0" * 40, 415, "me.jpg: a HEIC photo (iPhone); export it as "
                                              "JPEG first; send a JPEG, PNG, GIF, BMP or WebP "
                                              "photo"),
    (b"<!DOCTYPE html><html>", 415, "me.jpg: a web page; send a JPEG, PNG, GIF, BMP or WebP "
                                    "photo"),
])
def test_refusals(data, status, message):
    with pytest.raises(PredictError) as e:
        uploads.check_upload(data, "me.jpg", 2000, 10**6)
    assert (e.value.status, str(e.value)) == (status, message)


def test_pixel_budget_is_read_from_the_header():
    bomb = _png_declaring(50000, 50000)  # 1.9 KB that would decode to 7.5 GB
    with pytest.raises(PredictError) as e:
        uploads.check_upload(bomb, "bomb.png", 10**6, 4096 * 4096)
    assert e.value.status == 413
    assert str(e.value).startswith("bomb.png: ") and "2500000000" in str(e.value)
    assert str(4096 * 4096) in str(e.value)


def test_truncated_files_are_400():
    jpeg = _encoded("JPEG", (64, 64))
    with pytest.raises(PredictError) as e:
        uploads.check_upload(jpeg[:3], "cut.jpg", 10**6, 10**6)
    assert e.value.status == 400 and str(e.value).startswith("cut.jpg: ")
    uploads.check_upload(jpeg[:len(jpeg) // 2], "half.jpg", 10**6, 10**6)  # header intact
    png = _encoded("PNG", (64, 64))
    with pytest.raises(PredictError) as e:
        uploads.decode_upload(png[:60], "half.png", 10**6)
    assert e.value.status == 400 and str(e.value).startswith("half.png: cannot be decoded (")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    rng = np.random.default_rng(orientation)
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", exif=exif)
    data = buf.getvalue()
    rgb, found = uploads.decode_upload(data, "o.png", 10**6)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert found == orientation
    np.testing.assert_array_equal(rgb, expected)


def test_a_progressive_jpeg_of_too_many_scans_is_413_before_decoding():
    from tests.common.crafted import many_scans
    from ugatit_tf.common.images import MAX_JPEG_SCANS
    assert uploads.check_upload(many_scans(MAX_JPEG_SCANS), "ok.jpg", 10**6, 10**6) == "jpeg"
    with pytest.raises(PredictError) as e:
        uploads.check_upload(many_scans(MAX_JPEG_SCANS + 1), "scans.jpg", 10**6, 10**6)
    assert (e.value.status, str(e.value)) == (
        413, f"scans.jpg: JPEG of {MAX_JPEG_SCANS + 1} scans, over the limit of "
             f"{MAX_JPEG_SCANS} (each scan of a progressive JPEG is decoded over the whole image)")
