"""Fixtures of the serve tests: a tiny random model (light, 32 px, ch 8), its SavedModel
export (the reference the page must equal), and the app running on a free port in a thread."""

import io
import threading
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from ugatit_tf.config import Config
from ugatit_tf.export import saved_model as ex
from ugatit_tf.model.networks import Networks
from ugatit_tf.serve import app as serve_app
from ugatit_tf.serve.models import LocalModel, listen

SIZE = 32
MAX_UPLOAD = 1_000_000
MAX_PIXELS = 1024 * 1024


def tiny_config(**changes):
    values = dict(light=True, img_size=SIZE, ch=8, n_res=2, n_dis=4, dataset="tiny")
    values.update(changes)
    return Config(**values).validate()


def jpeg(rgb, quality=92) -> bytes:
    return tf.io.encode_jpeg(rgb, quality=quality).numpy()


def astronaut_jpeg() -> bytes:
    import skimage.data
    return jpeg(skimage.data.astronaut())


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:40]
    return tf.io.decode_png(data, channels=3).numpy()


def start_server(service):
    """Serve `service` on 127.0.0.1:<free port> in a daemon thread; returns (url, stop)."""
    import uvicorn
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(serve_app.create_app(service, "127.0.0.1"),
                                           log_level="warning", access_log=False,
                                           limit_concurrency=serve_app.LIMIT_CONCURRENCY))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        thread.join(10)
        sock.close()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


@pytest.fixture(scope="session")
def nets():
    tf.random.set_seed(7)
    return Networks(tiny_config(), discriminators=False)


@pytest.fixture(scope="session")
def saved_model(nets, tmp_path_factory):
    """The SavedModel of the same weights, loaded: what TF Serving would run."""
    path = tmp_path_factory.mktemp("export") / "tiny" / "1"
    ex.export_saved_model(nets, tiny_config(), str(path), max_bytes=MAX_UPLOAD,
                          max_pixels=MAX_PIXELS, max_batch=16)
    return types.SimpleNamespace(path=str(path), loaded=tf.saved_model.load(str(path)))


@pytest.fixture(scope="session")
def service(nets):
    model = LocalModel.from_networks(nets, SIZE, MAX_UPLOAD, MAX_PIXELS, 16, source="test")
    svc = serve_app.Service(model, "tiny", MAX_UPLOAD, MAX_PIXELS, max_batch=16)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def server(service):
    url, stop = start_server(service)
    yield url
    stop()


def saved_model_png(saved_model, data: bytes, signature="serving_default") -> np.ndarray:
    out = saved_model.loaded.signatures[signature](image_bytes=tf.constant([data]))
    return decode_png(bytes(out["image_bytes"].numpy()[0]))


def png_bytes(rgb) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
