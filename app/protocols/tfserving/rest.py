"""TensorFlow Serving's REST `:predict` body: row (`instances`) or columnar (`inputs`) JSON to named tensors,
and the output back in the same format.

Strings are JSON strings, or `{"b64": "..."}` objects for binary values, as TensorFlow Serving documents; a
text output is answered as strings.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import Response

from app.protocols.inference import read_json_object, tensor_name
from app.protocols.tfserving import status as tfserving
from app.server.errors import InvalidParameter
from genserve.signatures import STRING, Signature

_B64 = "b64"


@dataclass(frozen=True)
class PredictRequest:
    tensors: dict[str, np.ndarray]
    row_format: bool


def parse_predict_request(body: bytes, signature: Signature) -> PredictRequest:
    """The named input tensors of a `:predict` body, and which of the two formats it used."""
    payload = _predict_object(body)
    tfserving.check_signature_name(str(payload.get("signature_name", "")))
    row_format = "instances" in payload
    if row_format == ("inputs" in payload):
        raise InvalidParameter("body", "give exactly one of `instances` (row format) or `inputs` (columnar)")
    if row_format:
        return PredictRequest(_row_tensors(payload["instances"], signature), row_format=True)
    return PredictRequest(_columnar_tensors(payload["inputs"], signature), row_format=False)


def _row_tensors(instances: object, signature: Signature) -> dict[str, np.ndarray]:
    """Row format: a list with one entry per row, an object of named inputs or, for one input, its value."""
    if not isinstance(instances, list) or not instances:
        raise InvalidParameter("instances", "must be a non-empty list, one entry per row")
    named = [isinstance(instance, dict) and not _is_binary(instance) for instance in instances]
    if not any(named):
        return {_only_input(signature, "instances"): _array("instances", instances)}
    if not all(named):
        raise InvalidParameter(
            "instances", "entries must all be objects of named inputs, or all plain values"
        )
    names = set(instances[0])
    if any(set(instance) != names for instance in instances):
        raise InvalidParameter("instances", "every entry must name the same inputs")
    return {
        tensor_name(name, "instances"): _array(name, [instance[name] for instance in instances])
        for name in sorted(names)
    }


def _columnar_tensors(inputs: object, signature: Signature) -> dict[str, np.ndarray]:
    """Columnar format: an object of named inputs, each holding every row, or for one input its value."""
    if isinstance(inputs, dict) and not _is_binary(inputs):
        return {tensor_name(name, "inputs"): _array(name, value) for name, value in inputs.items()}
    return {_only_input(signature, "inputs"): _array("inputs", inputs)}


def _only_input(signature: Signature, field: str) -> str:
    """The input an unnamed value is for: the one input this model requires."""
    names = signature.required_names()
    if len(names) != 1:
        raise InvalidParameter(field, f"this model takes several inputs {names}: name them in objects")
    return names[0]


def _array(field: str, value: object) -> np.ndarray:
    if _holds_strings(value):
        return _string_array(field, value)
    try:
        array = np.asarray(value)
    except (ValueError, RecursionError):
        raise InvalidParameter(field, "must be a number or an evenly nested list of numbers") from None
    if array.dtype.kind not in "biuf":
        raise InvalidParameter(field, "must be a number or an evenly nested list of numbers")
    return array


def _holds_strings(value: object) -> bool:
    """Whether the first value of a (nested) list is a string or a binary `{"b64": ...}` value."""
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, str) or _is_binary(value)


def _is_binary(value: object) -> bool:
    return isinstance(value, dict) and list(value) == [_B64]


def _string_array(field: str, value: object) -> np.ndarray:
    """Strings (JSON strings as UTF-8, `{"b64": ...}` as their bytes) in an array of the list's shape."""
    try:
        array = np.array(_bytes(field, value), dtype=STRING)
    except RecursionError:
        raise InvalidParameter(field, "is nested too deeply") from None
    if not all(isinstance(item, bytes) for item in array.flat):
        raise InvalidParameter(field, "must be a string or an evenly nested list of strings")
    return array


def _bytes(field: str, value: object) -> object:
    if isinstance(value, list):
        return [_bytes(field, item) for item in value]
    if isinstance(value, str):
        return value.encode()
    if _is_binary(value):
        encoded = value[_B64] if isinstance(value, dict) else None
        try:
            return base64.b64decode(str(encoded), validate=True)
        except binascii.Error:
            raise InvalidParameter(field, "holds a `b64` value that is not base64") from None
    raise InvalidParameter(field, "must be a string or an evenly nested list of strings")


def predict_response(row_format: bool, outputs: dict[str, np.ndarray]) -> Response:
    """`predictions` (rows) or `outputs` (columns); the one output is answered unnamed, as TensorFlow Serving
    does, strings as JSON strings. Large: build it on a worker thread."""
    [output] = outputs.values()
    value = output.tolist()
    if output.dtype == STRING:
        value = _decoded(value)
    key = "predictions" if row_format else "outputs"
    body = json.dumps({key: value}, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, media_type="application/json")


def _decoded(value: object) -> object:
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    return value.decode() if isinstance(value, bytes) else value


def _predict_object(body: bytes) -> dict[str, Any]:
    return read_json_object(
        body, "must be a JSON object", "must be a JSON object with `instances` or `inputs`"
    )
