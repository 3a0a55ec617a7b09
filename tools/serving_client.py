#!/usr/bin/env python
"""Translate an image with a U-GAT-IT model served by TF Serving.

REST (needs only `requests`):

    python tools/serving_client.py --url http://localhost:8501/v1/models/selfie2anime:predict \\
        --image photo.jpg --out anime.png [--signature serving_default|b2a_bytes]

gRPC (optional; needs `pip install tensorflow-serving-api`):

    python tools/serving_client.py --grpc localhost:8500 --model selfie2anime \\
        --image photo.jpg --out anime.png

The export's byte signatures (serving_default / a2b_bytes: A -> B, b2a_bytes: B -> A, and the
*_model_size variants) take `image_bytes` (JPEG/PNG/BMP/GIF) and answer `image_bytes` (PNG).
Over REST, TF Serving carries bytes as {"b64": "<base64>"}: the request is
{"signature_name": ..., "instances": [{"b64": ...}]} (row format) or {"inputs": ...}
(columnar), and the answer {"predictions": [...]} or {"outputs": ...} respectively.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import sys

INPUT_NAME = "image_bytes"
OUTPUT_NAME = "image_bytes"
SIGNATURES = ("serving_default", "a2b_bytes", "b2a_bytes", "a2b_bytes_model_size",
              "b2a_bytes_model_size")


class ServingError(RuntimeError):
    """The server refused the request or answered something unexpected."""


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def build_rest_request(images, signature_name: str = "serving_default",
                       columnar: bool = False) -> dict:
    """The JSON body of a TF Serving REST predict call for one or more encoded images
    (bytes). Row format: {"signature_name": s, "instances": [{"b64": ...}, ...]};
    columnar: {"signature_name": s, "inputs": [{"b64": ...}, ...]} (the signature has one
    input, so it needs no name)."""
    if isinstance(images, (bytes, bytearray)):
        images = [images]
    values = [_b64(bytes(image)) for image in images]
    if not values:
        raise ValueError("no images to send")
    key = "inputs" if columnar else "instances"
    return {"signature_name": signature_name, key: values}


def _decode_value(value, where) -> bytes:
    if isinstance(value, dict):
        if "b64" in value:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError) as e:
                raise ServingError(f"{where}: invalid base64 ({e})") from e
        if OUTPUT_NAME in value:  # a named output (signatures with several outputs)
            return _decode_value(value[OUTPUT_NAME], where)
    raise ServingError(f"{where}: expected {{\"b64\": ...}} (an output whose name ends in "
                       f"_bytes), got {str(value)[:200]}")


def parse_rest_response(body) -> list[bytes]:
    """The images (PNG bytes) of a TF Serving REST predict answer, in request order.

    Handles the row format {"predictions": [{"b64": ...}, ...]} (or with named outputs
    [{"image_bytes": {"b64": ...}}, ...]), the columnar format {"outputs": [...]} /
    {"outputs": {"image_bytes": [...]}}, and raises ServingError for {"error": ...}."""
    if not isinstance(body, dict):
        raise ServingError(f"unexpected answer: {str(body)[:200]}")
    if "error" in body:
        raise ServingError(f"the server refused the request: {body['error']}")
    if "predictions" in body:
        values, where = body["predictions"], "predictions"
    elif "outputs" in body:
        values, where = body["outputs"], "outputs"
        if isinstance(values, dict) and OUTPUT_NAME in values and "b64" not in values:
            values = values[OUTPUT_NAME]
    else:
        raise ServingError(f"the answer has neither 'predictions' nor 'outputs': "
                           f"{str(body)[:200]}")
    if isinstance(values, dict):  # a single (unbatched) value
        values = [values]
    if not isinstance(values, list):
        raise ServingError(f"{where}: expected a list, got {str(values)[:200]}")
    return [_decode_value(v, f"{where}[{i}]") for i, v in enumerate(values)]


def predict_rest(url: str, images, signature_name: str = "serving_default",
                 columnar: bool = False, timeout: float = 60.0, session=None) -> list[bytes]:
    """POST the images to a TF Serving REST :predict URL and return the PNG bytes."""
    import requests
    http = session or requests
    body = build_rest_request(images, signature_name, columnar)
    try:
        response = http.post(url, json=body, timeout=timeout)
    except requests.RequestException as e:
        raise ServingError(f"cannot reach {url}: {e}") from e
    try:
        answer = response.json()
    except ValueError:
        raise ServingError(f"{url} answered HTTP {response.status_code} that is not JSON: "
                           f"{response.text[:200]}") from None
    if response.status_code != 200 and "error" not in answer:
        raise ServingError(f"{url} answered HTTP {response.status_code}: {str(answer)[:200]}")
    return parse_rest_response(answer)


def _grpc_modules():
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as e:
        raise ServingError(
            f"--grpc needs the optional packages grpcio and tensorflow-serving-api "
            f"(pip install tensorflow-serving-api); import failed: {e}. "
            f"Or use the REST API with --url.") from e
    return grpc, predict_pb2, prediction_service_pb2_grpc


def build_grpc_request(images, model_name: str, signature_name: str = "serving_default"):
    """A tensorflow_serving PredictRequest carrying the encoded images as a string tensor."""
    _, predict_pb2, _ = _grpc_modules()
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    if isinstance(images, (bytes, bytearray)):
        images = [images]
    images = [bytes(i) for i in images]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(images))]),
        string_val=images)
    request.inputs[INPUT_NAME].CopyFrom(tensor)
    return request


def predict_grpc(target: str, model_name: str, images, signature_name: str = "serving_default",
                 timeout: float = 60.0) -> list[bytes]:
    grpc, _, prediction_service_pb2_grpc = _grpc_modules()
    request = build_grpc_request(images, model_name, signature_name)
    channel = grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", 64 * 2 ** 20),
        ("grpc.max_receive_message_length", 64 * 2 ** 20)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        response = stub.Predict(request, timeout)
    except grpc.RpcError as e:
        raise ServingError(f"gRPC {target}: {e.code().name}: {e.details()}") from e
    return list(response.outputs[OUTPUT_NAME].string_val)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (this file stands alone: no ugatit_tf import)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _check_args(parser, args) -> None:
    """Refuse, before any request, what cannot work: one line naming the flag, exit 2."""
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        parser.error(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    if args.grpc and not args.model:
        parser.error("--grpc needs --model NAME")
    if not os.path.isfile(args.image):
        what = "is not a file" if os.path.exists(args.image) else "does not exist"
        parser.error(f"--image {args.image}: {what}")
    if os.path.isdir(args.out) or args.out.endswith(("/", os.sep)):
        parser.error(f"--out {args.out}: is a folder; give the PNG's file name")
    parent = os.path.dirname(os.path.abspath(args.out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        parser.error(f"--out {args.out}: {parent} is a file, not a folder")


def main(argv=None) -> int:
    parser = _Parser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="REST predict URL, e.g. "
                        "http://localhost:8501/v1/models/selfie2anime:predict")
    target.add_argument("--grpc", metavar="HOST:PORT", help="gRPC address, e.g. localhost:8500 "
                        "(needs tensorflow-serving-api)")
    parser.add_argument("--model", help="model name for --grpc (the NAME in /v1/models/NAME)")
    parser.add_argument("--image", required=True, help="input image (JPEG, PNG, BMP or GIF)")
    parser.add_argument("--out", required=True, help="where to write the PNG result")
    parser.add_argument("--signature", default="serving_default",
                        help=f"signature: {', '.join(SIGNATURES)} (default serving_default, "
                             f"A -> B)")
    parser.add_argument("--columnar", action="store_true",
                        help="send the columnar {\"inputs\": ...} format instead of instances")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        with open(args.image, "rb") as f:
            data = f.read()
        if args.grpc:
            results = predict_grpc(args.grpc, args.model, [data], args.signature, args.timeout)
        else:
            results = predict_rest(args.url, [data], args.signature, args.columnar,
                                   args.timeout)
        if len(results) != 1:
            raise ServingError(f"expected one image back, got {len(results)}")
        folder = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(folder, exist_ok=True)
        with open(args.out, "wb") as f:
            f.write(results[0])
    except (OSError, ServingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({len(results[0])} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
