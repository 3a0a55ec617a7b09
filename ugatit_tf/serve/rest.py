"""TF Serving's REST predict format, for the signatures of our SavedModel.

Requests: {"signature_name": S, "instances": [...]} (row format: each instance is the value of
the signature's one input, or {"name": value}) or {"inputs": value | {"name": value}}
(columnar). String tensors carry bytes as {"b64": "..."}. Answers: {"predictions": [...]} (one
value per instance; {"name": value} when the signature has several outputs) or {"outputs":
...}; string outputs whose name ends in `_bytes` are {"b64": ...}. Errors: {"error": message}.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from ugatit_tf.serve.models import PredictError


def _bad(message: str) -> PredictError:
    return PredictError(400, message)


def _to_array(values, name: str, dtype: str, shape: list) -> np.ndarray:
    if dtype == "string":
        if not isinstance(values, list):
            raise _bad(f"input {name}: expected a list of values, got {type(values).__name__}")
        out = []
        for i, v in enumerate(values):
            if isinstance(v, dict) and set(v) == {"b64"} and isinstance(v["b64"], str):
                try:
                    out.append(base64.b64decode(v["b64"], validate=True))
                except (binascii.Error, ValueError):
                    raise _bad(f"{name}[{i}]: invalid base64 in {{\"b64\": ...}}") from None
            elif isinstance(v, str):
                out.append(_utf8(v, f"{name}[{i}]"))
            else:
                raise _bad(f"{name}[{i}]: expected {{\"b64\": \"...\"}} or a string")
        return np.array(out, dtype=object)
    try:
        array = np.asarray(values, dtype=np.float32 if dtype.startswith("float") else dtype)
    except (ValueError, TypeError):
        raise _bad(f"input {name}: expected nested lists of numbers of shape "
                   f"{_shape_text(shape)}") from None
    if array.ndim != len(shape) or any(d is not None and d != a
                                       for d, a in zip(shape, array.shape)):
        raise _bad(f"input {name}: shape {list(array.shape)} does not match the signature's "
                   f"{_shape_text(shape)}")
    return array


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, sent as a JSON escape such as \udcff
        raise _bad(f"JSON Parse error: the request body has a string that is not valid "
                   f"Unicode (a lone surrogate) in {where}") from None


def _rows(body: dict) -> int:
    """The rows (images) of a predict body: len of "instances", or of its "inputs" values."""
    # 0 when malformed: parse_request says what is wrong
    values = body.get("instances", body.get("inputs"))
    if isinstance(values, dict) and "b64" not in values:
        return max((len(v) for v in values.values() if isinstance(v, list)), default=0)
    return len(values) if isinstance(values, list) else 0


def check_rows(body, max_batch: int, what: str) -> None:
    """PredictError 400, worded as the model's, for more than max_batch rows in a body."""
    rows = _rows(body) if isinstance(body, dict) else 0
    if rows > max_batch:
        raise _bad(f"{what}: {rows} images in one request, more than the limit of "
                   f"{max_batch} (max_batch)")


def _shape_text(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def parse_request(body, input_specs: dict) -> tuple[dict, bool]:
    """(inputs as arrays, columnar?) of a predict body for a signature with `input_specs`
    ({name: (dtype, shape)}); PredictError 400 with TF Serving's wording when malformed."""
    if not isinstance(body, dict):
        raise _bad("JSON Value: the request body must be an object")
    if ("instances" in body) == ("inputs" in body):
        raise _bad("Missing 'inputs' or 'instances' key" if "instances" not in body else
                   "Not both 'inputs' and 'instances' keys may be given")
    names = list(input_specs)
    if "inputs" in body:
        values = body["inputs"]
        if isinstance(values, dict) and "b64" not in values:
            if set(values) != set(names):
                raise _bad(f"inputs: expected the key(s) {', '.join(names)}")
        elif len(names) == 1:
            values = {names[0]: values}
        else:
            raise _bad(f"inputs: the signature has several inputs ({', '.join(names)}); "
                       f"give them by name")
        columns = values
    else:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise _bad("instances: expected a non-empty list")
        columns = {n: [] for n in names}
        for i, item in enumerate(instances):
            if isinstance(item, dict) and "b64" not in item:
                if set(item) != set(names):
                    raise _bad(f"instances[{i}]: expected the key(s) {', '.join(names)}")
                for n in names:
                    columns[n].append(item[n])
            elif len(names) == 1:
                columns[names[0]].append(item)
            else:
                raise _bad(f"instances[{i}]: the signature has several inputs; give them by name")
    inputs = {n: _to_array(columns[n], n, *input_specs[n]) for n in names}
    return inputs, "inputs" in body


def _json(name: str, value):
    if isinstance(value, np.ndarray) and value.dtype == object or isinstance(value, bytes):
        if isinstance(value, bytes):
            return ({"b64": base64.b64encode(value).decode("ascii")} if name.endswith("_bytes")
                    else value.decode("utf-8", "replace"))
        return [_json(name, v) for v in value]
    return np.asarray(value).tolist()


def format_response(outputs: dict, columnar: bool) -> dict:
    """TF Serving's answer for `outputs` ({name: array with a batch axis})."""
    names = sorted(outputs)
    if columnar:
        if len(names) == 1:
            return {"outputs": _json(names[0], outputs[names[0]])}
        return {"outputs": {n: _json(n, outputs[n]) for n in names}}
    rows = len(next(iter(outputs.values())))
    if len(names) == 1:
        return {"predictions": [_json(names[0], outputs[names[0]][i]) for i in range(rows)]}
    return {"predictions": [{n: _json(n, outputs[n][i]) for n in names} for i in range(rows)]}
