"""The FastAPI app: the page, POST /api/translate, and TF Serving's REST API; `serve(config)`.

Routes: GET / (the page, from static/), GET /api/info, POST /api/translate (multipart: the
photo in `image`; `direction` a2b|b2a, `face_crop`, `paste_back` true|false, `format` png|json),
GET /v1/models/NAME[/versions/V][/metadata], POST /v1/models/NAME[/versions/V]:predict. Every
refusal is JSON {"error": one line} with 400/403/404/413/415 (503 when 64 requests already
wait for the model); a failure inside a request answers 500 and the server goes on.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import sys
import traceback
from urllib.parse import urlsplit

from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ugatit_tf.config import Config
from ugatit_tf.serve.batcher import Batcher
from ugatit_tf.serve.models import (PredictError, RemoteModel, check_serve_flags, listen,
                                    load_model, served_name)
from ugatit_tf.serve.page import DIRECTIONS, Options, PageTranslator
from ugatit_tf.serve.rest import check_rows, format_response, parse_request
from ugatit_tf.serve.uploads import ACCEPTED, check_upload, decode_upload

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the option fields around the photo
TRUE, FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no", "")
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"]  # the Host a loopback bind accepts
# uvicorn's own cap on open connections and running tasks (it answers 503 itself past it): room
# for the 64 requests that may wait for the model, the page's files and idle keep-alive
# connections of a few browsers
LIMIT_CONCURRENCY = 256
JSON_SLACK = 64  # commas of a predict body's JSON structure besides its values (keys, rows)
CROSS_SITE = "cross-site request refused: use the page this server serves, or a program"


class Service:
    """The model (loaded once), its batcher and the page's translator."""

    def __init__(self, model, name: str, max_upload_bytes: int, max_pixels: int,
                 max_batch: int = 16, predict_body_limit: int | None = None,
                 max_waiting: int = 64):
        self.model = model
        self.name = name
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self.predict_body_limit = predict_body_limit or max(64 * 2**20, 4 * self.max_upload_bytes)
        self.max_batch = int(max_batch)
        self.max_waiting = int(max_waiting)
        self.waiting = 0  # requests admitted to the model's queue (changed on the event loop)
        self._limiter = None  # the model requests' own threads, made on the event loop
        self.batcher = Batcher(model.predict, max_batch=max_batch, max_pending=max_waiting)
        self.page = PageTranslator(self.batcher.submit, model.img_size)

    def info(self) -> dict:
        return {"model": self.name, "img_size": self.model.img_size, "source": self.model.source,
                "version": self.model.version, "max_upload_bytes": self.max_upload_bytes,
                "max_pixels": self.max_pixels, "accepted": ACCEPTED,
                "directions": list(DIRECTIONS)}

    @contextlib.contextmanager
    def admitted(self):
        """Count a request that waits for the model; PredictError 503 when max_waiting do."""
        # used on the event loop only, with no await between the check and the count
        if self.waiting >= self.max_waiting:
            raise PredictError(503, f"the server is busy ({self.waiting} requests waiting); "
                                    f"try again in a moment")
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    async def run(self, fn, *args):
        """fn(*args) in a thread of the model requests' own pool, one per admitted request."""
        # not Starlette's pool of 40, which serves the page's files: they must stay quick
        if self._limiter is None:
            self._limiter = CapacityLimiter(self.max_waiting)
        return await to_thread.run_sync(fn, *args, limiter=self._limiter)

    def translate_upload(self, data: bytes, name: str, options: Options):
        kind = check_upload(data, name, self.max_upload_bytes, self.max_pixels)
        rgb, orientation = decode_upload(data, name, self.max_pixels)
        return self.page.translate(data, kind, rgb, orientation == 1, options)

    def predict(self, body: bytes) -> dict:
        """TF Serving's predict on a JSON body (bytes); the answer as a JSON-ready dict."""
        self._check_values(body)
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise PredictError(400, f"JSON Parse error: {e}") from None
        except RecursionError:
            raise PredictError(400, "JSON Parse error: the request body is nested too "
                                    "deeply") from None
        if not isinstance(request, dict):
            raise PredictError(400, "JSON Value: the request body must be an object")
        signature = request.get("signature_name") or "serving_default"
        if signature not in self.model.signature_names():
            raise PredictError(400, f"Serving signature name: \"{shown(str(signature))}\" not "
                                    f"found in signature def")
        check_rows(request, self.max_batch, _label(signature))
        inputs, columnar = parse_request(request, self.model.input_specs(signature))
        return format_response(self.batcher.submit(signature, inputs), columnar)

    def _check_values(self, body: bytes) -> None:
        """PredictError 400 when the body has more values than the largest legit request."""
        # Counted by the commas, at C speed, before parsing. The largest legitimate request is
        # max_batch images of the float signatures (S*S*3 numbers each: values - 1 commas in
        # nested lists), plus JSON_SLACK for keys; a bytes signature's max_batch strings need
        # far fewer (its rows are checked after parsing, before any conversion).
        size = self.model.img_size
        limit = self.max_batch * size * size * 3 + JSON_SLACK
        if body.count(b",") > limit:
            raise PredictError(400, f"JSON Value: the request body has more than {limit} "
                                    f"values, more than {self.max_batch} images (max_batch) of "
                                    f"{size}x{size}x3 hold")

    def status(self) -> dict:
        return {"model_version_status": [{"version": self.model.version or "1",
                                          "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    def close(self) -> None:
        self.batcher.close()


def _label(signature: str) -> str:
    """The name the model's batch-size message gives a signature."""
    # serving_default is the a2b_bytes function (ugatit_tf/export/saved_model.py)
    return "a2b_bytes" if signature == "serving_default" else signature


def shown(text: str, limit: int = 100) -> str:
    """A stranger's `text` for a one-line message: no control characters, at most `limit`."""
    # isprintable() is False for control characters and lone surrogates: they become '?'
    text = "".join(c if c.isprintable() else "?" for c in text[:limit + 1])
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _error(status: int, message: str):
    return JSONResponse({"error": message}, status_code=status)


async def _limited(request, limit: int, what: str):
    """The request body as an async stream that stops with 413 past `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PredictError(413, f"{what}: the request is {int(length)} bytes, more than the "
                                f"limit of {limit} bytes")
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PredictError(413, f"{what}: the request is more than the limit of {limit} "
                                    f"bytes")
        yield chunk


def _flag(form, name: str, default: bool) -> bool:
    value = form.get(name)
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise PredictError(400, f"form field {name} must be true or false, got {str(value)[:40]!r}")


async def _read_form(request, service: Service):
    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        raise PredictError(415, "send the photo as multipart/form-data in a field named image")
    stream = _limited(request, service.max_upload_bytes + FORM_OVERHEAD, "upload")
    try:
        form = await MultiPartParser(request.headers, stream, max_files=1, max_fields=16,
                                     max_part_size=4096).parse()
    except MultiPartException as e:
        raise PredictError(400, f"malformed form: {e.message}") from None
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise PredictError(400, "no photo: send it in a form field named image")
    return form, upload


def _origin_host(origin: str) -> str | None:
    """host[:port] of an Origin header, lower case; None when it has none ("null")."""
    try:
        return urlsplit(origin).netloc.lower() or None
    except ValueError:
        return None


def _check_same_site(request) -> None:
    """PredictError 403 for a browser's request from another site's page (a form or fetch)."""
    # Sec-Fetch-Site says so, or the Origin is not this server's Host; programs (curl,
    # requests) send neither header
    origin = request.headers.get("origin")
    host = request.headers.get("host", "").lower()
    if (request.headers.get("sec-fetch-site", "").lower() == "cross-site"
            or origin is not None and _origin_host(origin) != host):
        raise PredictError(403, CROSS_SITE)


async def _translate(request, service: Service):
    _check_same_site(request)
    with service.admitted():
        return await _translate_admitted(request, service)


async def _translate_admitted(request, service: Service):
    form, upload = await _read_form(request, service)
    direction = str(form.get("direction") or "a2b")
    if direction not in DIRECTIONS:
        raise PredictError(400, f"form field direction must be a2b or b2a, got {direction[:40]!r}")
    options = Options(direction, _flag(form, "face_crop", True), _flag(form, "paste_back", False))
    answer = str(form.get("format") or "png")
    if answer not in ("png", "json"):
        raise PredictError(400, f"form field format must be png or json, got {answer[:40]!r}")
    data = await upload.read()
    name = shown(os.path.basename(upload.filename or "")) or "the photo"
    result = await service.run(service.translate_upload, data, name, options)
    headers = {"X-Mode": result.mode, "X-Faces": str(result.faces)}
    if answer == "png":
        return Response(result.output_png, media_type="image/png", headers=headers)
    return JSONResponse({"output": _data_url(result.output_png),
                         "attention": _data_url(result.attention_png),
                         "mode": result.mode, "faces": result.faces,
                         "width": result.width, "height": result.height})


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def is_loopback(host: str) -> bool:
    """Whether `host` (the --host bind address) is reachable from this computer only."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(service: Service, host: str | None = None) -> FastAPI:
    """The FastAPI app over `service`: the page and its API, then TF Serving's REST API."""
    # on a loopback bind, the Host must be localhost, 127.0.0.1 or [::1]: a web page whose
    # name a stranger's DNS rebinds to 127.0.0.1 cannot reach the server
    app = FastAPI(title="U-GAT-IT", docs_url=None, redoc_url=None, openapi_url=None)
    if host is not None and is_loopback(host):
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    _add_page_routes(app, service)
    _add_serving_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Answer refusals (PredictError) and failures (any other exception) as JSON errors."""
    app.add_exception_handler(PredictError, _refused)
    app.add_exception_handler(Exception, _failed)


async def _refused(request: Request, e: PredictError):
    """A refusal: its own status and one-line message."""
    return _error(e.status, e.message)


async def _failed(request: Request, e: Exception):
    """A failure: the traceback on the console, a 500 naming only the exception's type."""
    traceback.print_exc()
    return _error(500, f"internal error (details in the server's log): {type(e).__name__}")


def _add_page_routes(app: FastAPI, service: Service) -> None:
    """GET / (the page), GET /api/info and POST /api/translate."""

    @app.get("/")
    async def index():
        return FileResponse(os.path.join(STATIC, "index.html"))

    @app.get("/api/info")
    async def info():
        return service.info()

    @app.post("/api/translate")
    async def translate(request: Request):
        return await _translate(request, service)


def _add_serving_routes(app: FastAPI, service: Service) -> None:
    """TF Serving's GET /v1/models/NAME[/versions/V][/metadata] and POST ...:predict."""
    remote = isinstance(service.model, RemoteModel)

    async def status(name: str):
        return await _model_status(service, remote, name, "")

    async def metadata(name: str):
        return await _model_status(service, remote, name, "/metadata")

    async def version_status(name: str, version: str):
        return await _model_status(service, remote, name, "")

    async def predict(request: Request, name: str):
        return await _model_predict(request, service, remote, name)

    async def version_predict(request: Request, name: str, version: str):
        return await _model_predict(request, service, remote, name)

    app.add_api_route("/v1/models/{name}", status, methods=["GET"])
    app.add_api_route("/v1/models/{name}/metadata", metadata, methods=["GET"])
    app.add_api_route("/v1/models/{name}/versions/{version}", version_status, methods=["GET"])
    app.add_api_route("/v1/models/{name}:predict", predict, methods=["POST"])
    app.add_api_route("/v1/models/{name}/versions/{version}:predict", version_predict,
                      methods=["POST"])


def _check_name(service: Service, name: str) -> None:
    """PredictError 404 unless `name` is the served model's name."""
    if name != service.name:
        raise PredictError(404, f"Servable not found for request: Latest({shown(name)}); this "
                                f"server serves {service.name}")


async def _forward(service: Service, tail: str, body: bytes | None) -> Response:
    """The remote TF Serving's answer to `tail` (GET when `body` is None), passed through."""
    code, answer = await service.run(service.model.forward, tail, body)
    return Response(answer, status_code=code, media_type="application/json")


async def _model_status(service: Service, remote: bool, name: str, tail: str):
    """GET /v1/models/NAME (tail "") or /v1/models/NAME/metadata (tail "/metadata")."""
    _check_name(service, name)
    if remote:
        return await _forward(service, tail, None)
    if tail.endswith("/metadata"):  # the first call traces every signature: seconds
        return await run_in_threadpool(_metadata, service, name)
    return service.status()


def _metadata(service: Service, name: str) -> JSONResponse:
    return JSONResponse({"model_spec": {"name": name, "signature_name": "",
                                        "version": service.model.version or "1"},
                         "metadata": service.model.metadata()})


def _predicted(service: Service, body: bytes) -> JSONResponse:
    """The predict answer, rendered (in its constructor) in the worker thread that calls this."""
    # off the event loop: a 16 x 256 x 256 x 3 float answer is 66 MB of JSON (seconds)
    return JSONResponse(service.predict(body))


async def _model_predict(request: Request, service: Service, remote: bool, name: str):
    """POST /v1/models/NAME:predict: admitted, the body read within its limit, to the model."""
    _check_name(service, name)
    _check_same_site(request)  # another site's text/plain form could spend model time
    with service.admitted():
        chunks = [c async for c in _limited(request, service.predict_body_limit, "predict")]
        body = b"".join(chunks)
        if remote:
            return await _forward(service, ":predict", body)
        return await service.run(_predicted, service, body)


def serve(config: Config) -> int:
    """Check the flags, listen, load the model once, then serve until Ctrl-C."""
    import uvicorn
    check_serve_flags(config)
    sock = listen(config.host, config.port)
    try:
        model = load_model(config)
    except BaseException:
        sock.close()
        raise
    name = served_name(config)
    service = Service(model, name, config.max_upload_bytes, config.max_pixels, config.max_batch)
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    print(f" [*] Model: {model.source} ({model.img_size}x{model.img_size})")
    print(f" [*] Listening on {host}:{port}. Open {url}/ in a browser; TF Serving REST: "
          f"{url}/v1/models/{name}:predict. Ctrl-C stops.", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(service, host), log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5,
                                           limit_concurrency=LIMIT_CONCURRENCY))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
        pass
    finally:
        service.close()
        sock.close()
    print(" [*] Stopped", file=sys.stderr)
    return 0
