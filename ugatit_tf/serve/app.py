"""The FastAPI app: the page, POST /api/translate, and TF Serving's REST API; `serve(config)`.

Routes: GET / (the page, from static/), GET /api/info, POST /api/translate (multipart: the
photo in `image`; `direction` a2b|b2a, `face_crop`, `paste_back` true|false, `format` png|json),
GET /v1/models/NAME[/versions/V][/metadata], POST /v1/models/NAME[/versions/V]:predict. Every
refusal is JSON {"error": one line} with 400/404/413/415 (503 when the queue is full); a failure
inside a request answers 500 and the server goes on.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import traceback

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ugatit_tf.config import Config
from ugatit_tf.serve.batcher import Batcher
from ugatit_tf.serve.models import (PredictError, RemoteModel, check_serve_flags, listen,
                                    load_model, served_name)
from ugatit_tf.serve.page import DIRECTIONS, Options, PageTranslator
from ugatit_tf.serve.rest import format_response, parse_request
from ugatit_tf.serve.uploads import ACCEPTED, check_upload, decode_upload

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the option fields around the photo
TRUE, FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no", "")


class Service:
    """The model (loaded once), its batcher and the page's translator."""

    def __init__(self, model, name: str, max_upload_bytes: int, max_pixels: int,
                 max_batch: int = 16, predict_body_limit: int | None = None):
        self.model = model
        self.name = name
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self.predict_body_limit = predict_body_limit or max(64 * 2**20, 4 * self.max_upload_bytes)
        self.batcher = Batcher(model.predict, max_batch=max_batch)
        self.page = PageTranslator(self.batcher.submit, model.img_size)

    def info(self) -> dict:
        return {"model": self.name, "img_size": self.model.img_size, "source": self.model.source,
                "version": self.model.version, "max_upload_bytes": self.max_upload_bytes,
                "max_pixels": self.max_pixels, "accepted": ACCEPTED,
                "directions": list(DIRECTIONS)}

    def translate_upload(self, data: bytes, name: str, options: Options):
        kind = check_upload(data, name, self.max_upload_bytes, self.max_pixels)
        rgb, orientation = decode_upload(data, name, self.max_pixels)
        return self.page.translate(data, kind, rgb, orientation == 1, options)

    def predict(self, body: bytes) -> dict:
        """TF Serving's predict on a JSON body (bytes); the answer as a JSON-ready dict."""
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise PredictError(400, f"JSON Parse error: {e}") from None
        if not isinstance(request, dict):
            raise PredictError(400, "JSON Value: the request body must be an object")
        signature = request.get("signature_name") or "serving_default"
        if signature not in self.model.signature_names():
            raise PredictError(400, f"Serving signature name: \"{signature}\" not found in "
                                    f"signature def")
        inputs, columnar = parse_request(request, self.model.input_specs(signature))
        return format_response(self.batcher.submit(signature, inputs), columnar)

    def status(self) -> dict:
        return {"model_version_status": [{"version": self.model.version or "1",
                                          "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    def close(self) -> None:
        self.batcher.close()


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
    if not kind.startswith("multipart/form-data"):
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


async def _translate(request, service: Service):
    form, upload = await _read_form(request, service)
    direction = str(form.get("direction") or "a2b")
    if direction not in DIRECTIONS:
        raise PredictError(400, f"form field direction must be a2b or b2a, got {direction[:40]!r}")
    options = Options(direction, _flag(form, "face_crop", True), _flag(form, "paste_back", False))
    answer = str(form.get("format") or "png")
    if answer not in ("png", "json"):
        raise PredictError(400, f"form field format must be png or json, got {answer[:40]!r}")
    data = await upload.read()
    name = os.path.basename(upload.filename or "") or "the photo"
    result = await run_in_threadpool(service.translate_upload, data, name, options)
    headers = {"X-Mode": result.mode, "X-Faces": str(result.faces)}
    if answer == "png":
        return Response(result.output_png, media_type="image/png", headers=headers)
    return JSONResponse({"output": _data_url(result.output_png),
                         "attention": _data_url(result.attention_png),
                         "mode": result.mode, "faces": result.faces,
                         "width": result.width, "height": result.height})


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over `service`: the page and its API, then TF Serving's REST API."""
    app = FastAPI(title="U-GAT-IT", docs_url=None, redoc_url=None, openapi_url=None)
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
    """A failure: the traceback on the console, a 500 with the exception's first 300 chars."""
    traceback.print_exc()
    return _error(500, f"internal error: {type(e).__name__}: {e}"[:300])


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
        raise PredictError(404, f"Servable not found for request: Latest({name}); this "
                                f"server serves {service.name}")


async def _forward(service: Service, tail: str, body: bytes | None) -> Response:
    """The remote TF Serving's answer to `tail` (GET when `body` is None), passed through."""
    code, answer = await run_in_threadpool(service.model.forward, tail, body)
    return Response(answer, status_code=code, media_type="application/json")


async def _model_status(service: Service, remote: bool, name: str, tail: str):
    """GET /v1/models/NAME (tail "") or /v1/models/NAME/metadata (tail "/metadata")."""
    _check_name(service, name)
    if remote:
        return await _forward(service, tail, None)
    if tail.endswith("/metadata"):
        return {"model_spec": {"name": name, "signature_name": "",
                               "version": service.model.version or "1"},
                "metadata": service.model.metadata()}
    return service.status()


async def _model_predict(request: Request, service: Service, remote: bool, name: str):
    """POST /v1/models/NAME:predict: the body, read within its limit, to the model."""
    _check_name(service, name)
    chunks = [c async for c in _limited(request, service.predict_body_limit, "predict")]
    body = b"".join(chunks)
    if remote:
        return await _forward(service, ":predict", body)
    return JSONResponse(await run_in_threadpool(service.predict, body))


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
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
        pass
    finally:
        service.close()
        sock.close()
    print(" [*] Stopped", file=sys.stderr)
    return 0
