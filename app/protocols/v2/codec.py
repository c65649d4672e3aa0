"""The Open Inference Protocol v2 wire format: inference requests to named numpy tensors, outputs to responses.

Tensors come as JSON (`data`, flat or nested, row-major; BYTES as strings) or, with the binary tensor data
extension that Triton's clients use by default, as raw little-endian bytes after a JSON header whose length is
in the `Inference-Header-Content-Length` header (BYTES: each element's length as 4 little-endian bytes, then
the element); outputs go back the same way when asked for.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import Response

from app.api import params
from app.protocols.inference import MAX_RANK, check_shape, read_json_object, tensor_name
from app.server.errors import InvalidParameter
from app.serving.registry import ModelRegistry, ModelVersion, VersionStatus
from genserve.signatures import STRING, TensorSpec, string_array

PLATFORM = "tensorflow_savedmodel"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_EXTENSION = "binary_tensor_data"
DATATYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": STRING,
}
DATATYPE_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
# Tensors a request may declare; more than a few are a mistake, and each costs parsing.
_MAX_TENSORS = 8
_MAX_ID_CHARS = 256
_LENGTH = struct.Struct("<I")  # the length before each element of a binary BYTES tensor


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    tensors: dict[str, np.ndarray]
    outputs: list[str] | None  # None: every output
    binary_outputs: set[str]
    all_binary: bool


def model_metadata(registry: ModelRegistry, model_version: ModelVersion) -> dict[str, Any]:
    """A version's metadata response: its name, the available versions, and the signature's tensors."""
    entry = registry.get_entry(model_version.name)
    available = [v.version for v in entry.versions.values() if v.status is VersionStatus.AVAILABLE]
    signature = model_version.serving.signature
    return {
        "name": model_version.name,
        "versions": [str(number) for number in sorted(available)],
        "platform": PLATFORM,
        "inputs": [_tensor_metadata(spec) for spec in signature.inputs],
        "outputs": [_tensor_metadata(spec) for spec in signature.outputs],
    }


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": DATATYPE_NAMES[spec.dtype], "shape": list(spec.shape)}


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    json_part, binary = _split_body(body, header_length)
    payload = read_json_object(
        json_part, "must be a JSON inference request", "must be a JSON object with `inputs`"
    )
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= _MAX_TENSORS:
        raise InvalidParameter("inputs", f"must be a list of 1 to {_MAX_TENSORS} tensors")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:
        name, array, offset = _parse_tensor(tensor, binary, offset)
        if name in tensors:
            raise InvalidParameter("inputs", f"{params.shown(name)} is given twice")
        tensors[name] = array
    if offset != len(binary):
        raise InvalidParameter("inputs", f"binary data holds {len(binary)} bytes; the tensors use {offset}")
    outputs, binary_outputs, all_binary = _requested_outputs(payload)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidParameter("id", "must be a string")
    shown_id = None if request_id is None else request_id[:_MAX_ID_CHARS]
    return InferRequest(shown_id, tensors, outputs, binary_outputs, all_binary)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    length = int(header_length) if header_length.isascii() and header_length.isdigit() else -1
    if not 0 < length <= len(body):
        raise InvalidParameter(HEADER_LENGTH, f"must be a byte count within the body's {len(body)} bytes")
    return body[:length], body[length:]


def _parse_tensor(tensor: object, binary: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    """One input's name and array; binary data is read from `offset` of `binary`, which moves past it."""
    if not isinstance(tensor, dict):
        raise InvalidParameter(
            "inputs", "each input must be an object with `name`, `datatype`, `shape`, `data`"
        )
    name = tensor_name(tensor.get("name"), "inputs")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidParameter(
            name, f"datatype must be one of {sorted(DATATYPES)}, got {params.shown(datatype)}"
        )
    dtype = DATATYPES[datatype]
    shape = _shape(name, tensor.get("shape"))
    count = math.prod(shape)
    size = _binary_size(name, tensor.get("parameters"))
    if size is None:
        data = tensor.get("data")
        if dtype == STRING:
            return name, _json_strings(name, data, shape, count), offset
        return name, _json_data(name, data, dtype, shape, count), offset
    if offset + size > len(binary):
        raise InvalidParameter(
            name, f"binary_data_size {size} runs past the {len(binary)} bytes of binary data"
        )
    if dtype == STRING:
        strings = _binary_strings(name, binary[offset : offset + size], count)
        return name, strings.reshape(shape), offset + size
    if size != count * dtype.itemsize:
        raise InvalidParameter(name, f"binary_data_size {size} does not match shape {shape} of {datatype}")
    array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
    return name, array.reshape(shape).astype(dtype), offset + size


def _shape(name: str, shape: object) -> list[int]:
    """A tensor's shape: at most `MAX_RANK` sizes, none for a scalar."""
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape)
    ):
        raise InvalidParameter(name, f"shape must be a list of at most {MAX_RANK} non-negative integers")
    return check_shape(name, shape)


def _binary_size(name: str, parameters: object) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InvalidParameter(name, "parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InvalidParameter(name, "binary_data_size must be a non-negative integer")
    return size


def _json_data(name: str, data: object, dtype: np.dtype, shape: list[int], count: int) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidParameter(name, "needs `data` (a list) or binary data")
    try:
        array = np.asarray(data)
    except (ValueError, RecursionError):
        raise InvalidParameter(name, "data must be a flat or evenly nested list of numbers") from None
    if array.dtype.kind not in "biuf":
        raise InvalidParameter(name, f"data must hold numbers only for datatype {DATATYPE_NAMES[dtype]}")
    if array.size != count:
        raise InvalidParameter(name, f"data must hold {count} numbers for shape {shape}, got {array.size}")
    if dtype.kind in "iu" and array.size:
        limits = np.iinfo(dtype)
        if array.dtype.kind == "f" or array.min() < limits.min or array.max() > limits.max:
            raise InvalidParameter(name, f"data must hold integers that fit {DATATYPE_NAMES[dtype]}")
    return array.astype(dtype).reshape(shape)


def _json_strings(name: str, data: object, shape: list[int], count: int) -> np.ndarray:
    values = _flat_strings(data, depth=MAX_RANK)
    if values is None or len(values) != count:
        raise InvalidParameter(name, f"data must hold {count} strings for shape {shape}")
    return string_array([value.encode() for value in values]).reshape(shape)


def _flat_strings(data: object, depth: int) -> list[str] | None:
    """The strings of a flat or nested list, row-major; None if anything else is in it."""
    if not isinstance(data, list) or depth < 0:
        return None
    values: list[str] = []
    for item in data:
        nested = [item] if isinstance(item, str) else _flat_strings(item, depth - 1)
        if nested is None:
            return None
        values.extend(nested)
    return values


def _binary_strings(name: str, data: bytes, count: int) -> np.ndarray:
    """`count` elements, each a 4-byte little-endian length and then that many bytes, filling `data` exactly."""
    values: list[bytes] = []
    offset = 0
    while len(values) < count and offset + _LENGTH.size <= len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size + length
        values.append(data[offset - length : offset])
    if len(values) != count or offset != len(data):
        raise InvalidParameter(name, f"binary data must hold {count} length-prefixed strings, exactly")
    return string_array(values)


def _requested_outputs(payload: dict[str, Any]) -> tuple[list[str] | None, set[str], bool]:
    """The outputs asked for (None: all), those to send as binary data, and whether all of them are."""
    parameters = payload.get("parameters")
    all_binary = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    outputs = payload.get("outputs")
    if outputs is None:
        return None, set(), all_binary
    if not isinstance(outputs, list) or not all(
        isinstance(output, dict) and isinstance(output.get("name"), str) for output in outputs
    ):
        raise InvalidParameter("outputs", "must be a list of objects with a `name`")
    names = [output["name"] for output in outputs]
    binary = {
        output["name"]
        for output in outputs
        if isinstance(output.get("parameters"), dict) and output["parameters"].get("binary_data") is True
    }
    return names, binary, all_binary


def infer_response(header: dict[str, Any], outputs: dict[str, np.ndarray], binary: set[str]) -> Response:
    """The JSON response, or a JSON header followed by the binary outputs (on a worker thread: it is big)."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in outputs.items():
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": DATATYPE_NAMES[array.dtype],
            "shape": list(array.shape),
        }
        if name in binary:
            data = _binary_data(array)
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        elif array.dtype == STRING:
            tensor["data"] = [value.decode() for value in array.reshape(-1)]
        else:
            tensor["data"] = array.reshape(-1).tolist()
        described.append(tensor)
    body = json.dumps({**header, "outputs": described}, separators=(",", ":")).encode()
    if not chunks:
        return Response(body, media_type="application/json")
    return Response(
        b"".join([body, *chunks]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(body))},
    )


def _binary_data(array: np.ndarray) -> bytes:
    if array.dtype == STRING:
        return b"".join(_LENGTH.pack(len(value)) + value for value in array.reshape(-1))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
