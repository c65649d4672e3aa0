"""TensorFlow Serving's REST `:predict` body: row (`instances`) or columnar (`inputs`) JSON to named tensors,
and images back in the same format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import Response

from app.errors import InvalidParameter
from app.protocols import tfserving
from app.protocols.tensors import Signature
from genserve import store


@dataclass(frozen=True)
class PredictRequest:
    tensors: dict[str, np.ndarray]
    row_format: bool


def parse_predict_request(body: bytes, signature: Signature) -> PredictRequest:
    """The named input tensors of a `:predict` body, and which of the two formats it used."""
    payload = _json_object(body)
    tfserving.check_signature_name(str(payload.get("signature_name", "")))
    row_format = "instances" in payload
    if row_format == ("inputs" in payload):
        raise InvalidParameter("body", "give exactly one of `instances` (row format) or `inputs` (columnar)")
    if row_format:
        return PredictRequest(_row_tensors(payload["instances"], signature), row_format=True)
    return PredictRequest(_columnar_tensors(payload["inputs"], signature), row_format=False)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidParameter("body", "must be a JSON object") from None
    if not isinstance(payload, dict):
        raise InvalidParameter("body", "must be a JSON object with `instances` or `inputs`")
    return payload


def _row_tensors(instances: object, signature: Signature) -> dict[str, np.ndarray]:
    """Row format: a list with one entry per image, an object of named inputs or, for one input, its value."""
    if not isinstance(instances, list) or not instances:
        raise InvalidParameter("instances", "must be a non-empty list, one entry per image")
    named = [isinstance(instance, dict) for instance in instances]
    if not any(named):
        return {_only_input(signature, "instances"): _array("instances", instances)}
    if not all(named):
        raise InvalidParameter(
            "instances", "entries must all be objects of named inputs, or all plain values"
        )
    names = set(instances[0])
    if any(set(instance) != names for instance in instances):
        raise InvalidParameter("instances", "every entry must name the same inputs")
    return {name: _array(name, [instance[name] for instance in instances]) for name in sorted(names)}


def _columnar_tensors(inputs: object, signature: Signature) -> dict[str, np.ndarray]:
    """Columnar format: an object of named inputs, each holding every image's rows, or for one input its value."""
    if isinstance(inputs, dict):
        return {str(name): _array(str(name), value) for name, value in inputs.items()}
    return {_only_input(signature, "inputs"): _array("inputs", inputs)}


def _only_input(signature: Signature, field: str) -> str:
    names = signature.input_names()
    if len(names) != 1:
        raise InvalidParameter(field, f"this model takes several inputs {names}: name them in objects")
    return names[0]


def _array(field: str, value: object) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, RecursionError):
        raise InvalidParameter(field[:48], "must be a number or an evenly nested list of numbers") from None
    if array.dtype.kind not in "biuf":
        raise InvalidParameter(field[:48], "must be a number or an evenly nested list of numbers")
    return array


def predict_response(row_format: bool, outputs: dict[str, np.ndarray]) -> Response:
    """`predictions` (rows) or `outputs` (columns); the one output is answered unnamed, as TensorFlow Serving
    does. Large: build it on a worker thread."""
    images = outputs[store.IMAGES_OUTPUT]
    key = "predictions" if row_format else "outputs"
    body = json.dumps({key: images.tolist()}, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")
