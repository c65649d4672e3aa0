"""Named tensors checked against a version's serving signature, and generating from them: the part every
inference protocol shares.

The signatures themselves are `genserve.signatures`; each protocol converts its own wire format to and from
numpy arrays (strings as object arrays of bytes, as TensorFlow holds them) and calls `Inference.infer`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from starlette.requests import Request

from app.api import params
from app.api.params import MAX_LATENT_VALUE
from app.server.errors import InvalidParameter
from app.serving.registry import ModelRegistry, ModelVersion
from app.serving.servable import CallContext
from genserve import store
from genserve.signatures import STRING, Signature, TensorSpec

# numpy kinds each input accepts, by the kind of its dtype: latents and temperatures may come as integers (JSON
# `0`), class indices, token counts and seeds may not come as floats, strings come only as strings.
T = TypeVar("T")

_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "O": "O"}
# What a protocol tensor's declared shape may be: at most this many dimensions, and (zero sizes aside) at most
# this many elements, so that even an empty tensor's shape is one numpy can hold.
MAX_RANK = 8
_MAX_ELEMENTS = 2**31


@dataclass(frozen=True)
class Inference:
    """What the inference protocols generate through: inputs checked against the version's signature (at most
    `max_rows` rows), then handed to its servable, which runs them through the same batchers as every route."""

    registry: ModelRegistry
    max_rows: int
    _large_parses: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))

    async def parse(self, parse: Callable[[bytes], T], body: bytes) -> T:
        """`parse(body)` for a protocol's wire format: off the event loop, one at a time, when the body is large."""
        if len(body) <= _INLINE_PARSE_BYTES:
            return parse(body)
        return await anyio.to_thread.run_sync(parse, body, limiter=self._large_parses)

    def resolve(self, name: str, selector: int | str | None) -> ModelVersion:
        """The servable version a protocol request names: 404 for an unknown model or version, 503 while it is
        loading (`ModelRegistry.resolve`)."""
        return self.registry.resolve(params.parse_model_name(name), selector)

    async def infer(
        self,
        model_version: ModelVersion,
        tensors: dict[str, np.ndarray],
        *,
        timeout_s: float | None = None,
        http_request: Request | None = None,
    ) -> dict[str, np.ndarray]:
        """The signature's outputs for named input `tensors`."""
        servable = model_version.serving
        signature = servable.signature
        checked = check_inputs(signature, tensors, self.max_rows)
        outputs = await servable.kind.infer(model_version, checked, CallContext(timeout_s, http_request))
        first = tensors.get(signature.inputs[0].name)
        if first is not None and first.ndim == 0:
            # A scalar input is answered with scalar outputs, as TensorFlow's own signatures do.
            outputs = {name: array.reshape(()) for name, array in outputs.items()}
        return outputs


def select_outputs(
    outputs: dict[str, np.ndarray], wanted: list[str] | None, field: str
) -> dict[str, np.ndarray]:
    """The outputs a request asked for (all when `wanted` is None); an unknown name is a 4xx naming `field`,
    the request's list of output names."""
    names = list(outputs) if wanted is None else wanted
    unknown = [name for name in names if name not in outputs]
    if unknown:
        raise InvalidParameter(
            field, f"{params.shown(unknown[0])} is not an output; outputs are {list(outputs)}"
        )
    return {name: outputs[name] for name in names}


# What a signature's tensor may be called (TensorFlow's own rule for names, bounded); anything else cannot be an
# input, and is refused before its value is read, under the field that holds it.
_TENSOR_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,63}")


def tensor_name(name: object, field: str) -> str:
    """`name` when it can name a tensor; else a 4xx naming `field` (which holds the names)."""
    if not isinstance(name, str) or _TENSOR_NAME.fullmatch(name) is None:
        raise InvalidParameter(
            field, f"tensor names are 1-64 letters, digits or _ . / -, got {params.shown(name)}"
        )
    return name


def check_shape(name: str, shape: list[int]) -> list[int]:
    """A tensor's declared shape, as every protocol reads it: a 4xx naming the tensor when it has too many
    dimensions, a negative size, or more elements than any request could send (zero sizes included)."""
    if len(shape) > MAX_RANK:
        raise InvalidParameter(name, f"shape may have at most {MAX_RANK} dimensions, got {len(shape)}")
    if any(size < 0 for size in shape):
        raise InvalidParameter(name, f"shape {shape} has a negative dimension")
    if math.prod(max(size, 1) for size in shape) > _MAX_ELEMENTS:
        raise InvalidParameter(name, f"shape {shape} is larger than any request can hold")
    return shape


def check_inputs(
    signature: Signature, tensors: dict[str, np.ndarray], max_rows: int
) -> dict[str, np.ndarray]:
    """The given inputs cast to the signature's dtypes, once names, kinds, shapes, row counts and values are right."""
    expected = signature.input_names()
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise InvalidParameter(unknown[0], f"is not an input of this model; its inputs are {expected}")
    missing = [name for name in signature.required_names() if name not in tensors]
    if missing:
        raise InvalidParameter(missing[0], f"is a required input; this model takes {expected}")
    checked = {
        spec.name: _check_tensor(spec, tensors[spec.name], max_rows)
        for spec in signature.inputs
        if spec.name in tensors
    }
    rows = {name: array.shape[0] for name, array in checked.items()}
    first = next(iter(rows.values()))
    mismatched = [name for name, count in rows.items() if count != first]
    if mismatched:
        raise InvalidParameter(mismatched[0], f"every input needs the same number of rows, got {rows}")
    return checked


def _check_tensor(spec: TensorSpec, array: np.ndarray, max_rows: int) -> np.ndarray:
    if array.dtype.kind not in _ACCEPTED_KINDS[spec.dtype.kind]:
        raise InvalidParameter(
            spec.name, f"must hold {_type_name(spec.dtype)} values, got {_type_name(array.dtype)}"
        )
    if spec.shape == (-1,) and array.ndim == 0:
        array = array.reshape(1)  # a scalar is one row: TensorFlow's own text signature takes scalars
    fixed = spec.shape[1:]
    if array.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(fixed, array.shape[1:], strict=True)
    ):
        raise InvalidParameter(spec.name, f"must have shape {list(spec.shape)}, got {list(array.shape)}")
    if not 1 <= array.shape[0] <= max_rows:
        raise InvalidParameter(spec.name, f"must hold between 1 and {max_rows} rows, got {array.shape[0]}")
    _check_values(spec, array)
    return array.astype(spec.dtype, copy=False)


def _check_values(spec: TensorSpec, array: np.ndarray) -> None:
    if spec.dtype == STRING:
        if not all(isinstance(value, bytes) for value in array.flat):
            raise InvalidParameter(spec.name, "must hold strings")
    elif spec.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InvalidParameter(spec.name, "every value must be finite (no NaN or infinity)")
        if spec.name == store.LATENT_INPUT and np.abs(array).max() > MAX_LATENT_VALUE:
            raise InvalidParameter(spec.name, f"values must lie within ±{MAX_LATENT_VALUE:g}")
    else:
        limits = np.iinfo(spec.dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidParameter(spec.name, f"values must fit in {spec.dtype.name}")


def _type_name(dtype: np.dtype) -> str:
    return "string" if dtype.kind in "OSU" else dtype.name


# Request bodies up to this size are parsed on the event loop (a thread hop would cost more than the parse);
# larger ones in a worker thread, one at a time, so that a burst of big bodies leaves the loop free between
# parses (the JSON parser holds the interpreter lock for the whole of each one).
_INLINE_PARSE_BYTES = 64 * 1024


def read_json_object(body: bytes, not_json: str, not_object: str) -> dict[str, Any]:
    """A request body that must be one JSON object; `not_json` and `not_object` say what it should have been."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidParameter("body", not_json) from None
    if not isinstance(payload, dict):
        raise InvalidParameter("body", not_object)
    return payload
