"""TensorFlow Serving's gRPC API: `PredictionService` (Predict, GetModelMetadata) and `ModelService`
(GetModelStatus), served by `grpc.aio` on the app's event loop.

Predictions go through the same batchers as every HTTP route (text: DT_STRING `string_val` in and out; sound
generators' `audio`: DT_FLOAT). A call's
gRPC deadline shortens its request deadline; errors map to gRPC status codes (404 → NOT_FOUND, a bad field → INVALID_ARGUMENT, a full queue
or a key over its quota → RESOURCE_EXHAUSTED, not ready or shutting down → UNAVAILABLE, a passed deadline →
DEADLINE_EXCEEDED), with the Retry-After seconds in the `retry-after` trailing metadata. With tracing on, each call
is a server span, a child of the `traceparent` in its metadata. Importing this module imports TensorFlow
(the messages are TensorFlow's protos), so the lifespan imports it only when GENSERVE_GRPC_PORT is set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from app.config import Settings
from app.metrics import Metrics
from app.protocols.inference import Inference, check_shape, select_outputs, tensor_name
from app.protocols.tfserving import status as tfserving
from app.server.api_keys import ApiKeys, check_key, presented_key
from app.server.connections import connection_budget
from app.server.errors import DeadlineExceeded, InvalidParameter, Overloaded, ServiceError
from app.server.quotas import current_client
from app.server.tracing import Tracing, grpc_call
from app.serving.registry import ModelRegistry, ModelVersion
from genserve import store
from genserve.signatures import STRING, string_array

logger = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)

# TensorProto dtypes accepted as inputs: their numpy type and the repeated field holding values when the
# client did not send `tensor_content`.
_DTYPES: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
}
# What signatures answer: images (uint8), sound generators' clips (float32) and text.
_OUTPUT_DTYPES = {
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    STRING: types_pb2.DT_STRING,
}
# Time kept back from a call's deadline, so that DEADLINE_EXCEEDED comes from us before the transport gives up.
_ANSWER_MARGIN_S = 0.05
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# The service of each method, for the names of their spans.
_SERVICES = {
    "Predict": PREDICTION_SERVICE,
    "GetModelMetadata": PREDICTION_SERVICE,
    "GetModelStatus": MODEL_SERVICE,
}


def status_code(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status for one of the service's errors."""
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    by_status = {
        401: grpc.StatusCode.UNAUTHENTICATED,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.INVALID_ARGUMENT,
        415: grpc.StatusCode.INVALID_ARGUMENT,
        422: grpc.StatusCode.INVALID_ARGUMENT,
        429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        499: grpc.StatusCode.CANCELLED,
        503: grpc.StatusCode.UNAVAILABLE,
    }
    return by_status.get(error.status_code, grpc.StatusCode.INTERNAL)


def tensor_to_array(name: str, tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto as a numpy array: numbers from `tensor_content` or their typed repeated field, strings
    (DT_STRING) from `string_val` as an object array of bytes."""
    if tensor.dtype != types_pb2.DT_STRING and tensor.dtype not in _DTYPES:
        known = tensor.dtype in types_pb2.DataType.values()
        shown = types_pb2.DataType.Name(tensor.dtype) if known else str(tensor.dtype)
        raise InvalidParameter(name, f"dtype {shown} is not a supported number or string type")
    if tensor.tensor_shape.unknown_rank:
        raise InvalidParameter(name, "needs a known shape")
    shape = check_shape(name, [dim.size for dim in tensor.tensor_shape.dim])
    count = math.prod(shape)
    if tensor.dtype == types_pb2.DT_STRING:
        if len(tensor.string_val) != count:
            raise InvalidParameter(
                name, f"holds {len(tensor.string_val)} strings; shape {shape} needs {count}"
            )
        return string_array(list(tensor.string_val)).reshape(shape)
    dtype, field = _DTYPES[tensor.dtype]
    if tensor.tensor_content:
        if len(tensor.tensor_content) != count * dtype.itemsize:
            raise InvalidParameter(
                name, f"tensor_content holds {len(tensor.tensor_content)} bytes, not shape {shape}"
            )
        return (
            np.frombuffer(tensor.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        )
    values = np.asarray(list(getattr(tensor, field)))
    # half_val holds each float16's raw bits; integer fields are wider than their dtype, so check the range.
    wire_dtype = np.dtype(np.uint16) if tensor.dtype == types_pb2.DT_HALF else dtype
    if values.size and wire_dtype.kind in "iu":
        limits = np.iinfo(wire_dtype)
        if values.min() < limits.min or values.max() > limits.max:
            raise InvalidParameter(name, f"values must fit in {dtype.name}")
    array = values.astype(wire_dtype)
    if tensor.dtype == types_pb2.DT_HALF:
        array = array.view(np.float16)
    if array.size != count:
        raise InvalidParameter(name, f"holds {array.size} values; shape {shape} needs {count}")
    return array.reshape(shape)


def array_to_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=_OUTPUT_DTYPES[array.dtype])
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    if array.dtype == STRING:
        tensor.string_val.extend(array.reshape(-1).tolist())
    else:
        # tensor_content holds the values little-endian, as TensorFlow writes them.
        tensor.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return tensor


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds the work may take: the call's deadline, less a margin so the answer reaches the client in time."""
    remaining = context.time_remaining()
    return None if remaining is None else max(0.0, remaining - _ANSWER_MARGIN_S)


def _selector(spec: model_pb2.ModelSpec) -> int | str | None:
    version = spec.version.value if spec.HasField("version") else None
    return tfserving.version_selector(version, spec.version_label or None)


class _Calls:
    """Answers one RPC: checks its key, maps the service's errors to gRPC statuses, counts and traces every call."""

    def __init__(self, metrics: Metrics, keys: ApiKeys | None, tracing: Tracing | None = None) -> None:
        self._metrics = metrics
        self._keys = keys
        self._tracing = tracing

    async def answer(
        self, method: str, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]]
    ) -> T:
        started = time.perf_counter()
        code = grpc.StatusCode.CANCELLED  # unless the call ends otherwise: the client left or gave up
        metadata = (
            dict(context.invocation_metadata() or ())
            if self._keys is not None or self._tracing is not None
            else {}
        )
        with grpc_call(self._tracing, f"{_SERVICES[method]}/{method}", metadata) as span:
            try:
                result = await self._run(metadata, work)
                code = grpc.StatusCode.OK
                return result
            except ServiceError as error:
                code, message = status_code(error), error.message
                retry = error.headers.get("Retry-After")
                trailing = (("retry-after", retry),) if retry else ()
            except Exception:
                logger.exception("unhandled error in gRPC %s", method)
                code, message, trailing = grpc.StatusCode.INTERNAL, "internal server error", ()
            finally:
                self._metrics.observe_grpc(method, code.name, time.perf_counter() - started)
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
        await context.abort(code, message, trailing_metadata=trailing)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _run(self, metadata: dict[str, str], work: Callable[[], Awaitable[T]]) -> T:
        """`work` as the client its key names (for quotas), counted among the requests in flight."""
        client = None
        if self._keys is not None:
            client = check_key(self._keys, presented_key(metadata.get("authorization"), None), self._metrics)
        token = current_client.set(client)
        try:
            with self._metrics.requests_in_flight.serving():
                return await work()
        finally:
            current_client.reset(token)


class _Malformed:
    """A request whose bytes are not a message of the method's type: answered INVALID_ARGUMENT by the method,
    so that it is counted and logged like any other call."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _lenient(message_type: type[M]) -> Callable[[bytes], M | _Malformed]:
    """A request deserializer that never raises (gRPC would answer UNKNOWN with the exception's class)."""

    def parse(data: bytes) -> M | _Malformed:
        try:
            return message_type.FromString(data)
        except Exception:  # protobuf raises DecodeError, and others for nesting too deep
            return _Malformed(message_type.DESCRIPTOR.full_name)

    return parse


def _parsed(request: M | _Malformed) -> M:
    if isinstance(request, _Malformed):
        logger.warning("a gRPC request was not a valid %s message", request.type_name)
        raise InvalidParameter("request", f"is not a valid {request.type_name} message")
    return request


def _service(name: str, methods: dict[str, tuple[Callable[..., Any], type[Message], type[Message]]]) -> Any:
    """The handler of one gRPC service: each method's behaviour with a lenient request deserializer."""
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=_lenient(request_type),
            response_serializer=response_type.SerializeToString,
        )
        for method, (behaviour, request_type, response_type) in methods.items()
    }
    return grpc.method_handlers_generic_handler(name, handlers)


class PredictionServicer:
    """Predict and GetModelMetadata through the service the REST protocols share (`Inference`)."""

    def __init__(self, inference: Inference, calls: _Calls) -> None:
        self._inference = inference
        self._calls = calls

    async def Predict(
        self, request: predict_pb2.PredictRequest | _Malformed, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        return await self._calls.answer("Predict", context, lambda: self._predict(_parsed(request), context))

    async def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest | _Malformed,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return await self._calls.answer("GetModelMetadata", context, lambda: self._metadata(_parsed(request)))

    def _resolve(self, spec: model_pb2.ModelSpec) -> ModelVersion:
        return self._inference.resolve(spec.name, _selector(spec))

    async def _predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        model_version = self._resolve(request.model_spec)
        tfserving.check_signature_name(request.model_spec.signature_name)
        tensors = {
            tensor_name(name, "inputs"): tensor_to_array(name, tensor)
            for name, tensor in request.inputs.items()
        }
        outputs = await self._inference.infer(model_version, tensors, timeout_s=_time_left(context))
        chosen = select_outputs(outputs, list(request.output_filter) or None, "output_filter")
        response = predict_pb2.PredictResponse()
        signature_name = request.model_spec.signature_name or store.SIGNATURE_NAME
        json_format.ParseDict(tfserving.model_spec(model_version, signature_name), response.model_spec)
        for name, array in chosen.items():
            response.outputs[name].CopyFrom(array_to_tensor(array))
        return response

    async def _metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if fields != [tfserving.SIGNATURE_DEF_FIELD]:
            raise InvalidParameter(
                "metadata_field", f"must be [{tfserving.SIGNATURE_DEF_FIELD!r}], got {fields[:4]}"
            )
        model_version = self._resolve(request.model_spec)
        found = tfserving.model_metadata(model_version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        json_format.ParseDict(found["model_spec"], response.model_spec)
        signatures = json_format.ParseDict(
            found["metadata"][tfserving.SIGNATURE_DEF_FIELD], get_model_metadata_pb2.SignatureDefMap()
        )
        response.metadata[tfserving.SIGNATURE_DEF_FIELD].Pack(signatures)
        return response


class ModelServicer:
    """GetModelStatus over the registry (HandleReloadConfigRequest stays unimplemented)."""

    def __init__(self, registry: ModelRegistry, calls: _Calls) -> None:
        self._registry = registry
        self._calls = calls

    async def GetModelStatus(
        self,
        request: get_model_status_pb2.GetModelStatusRequest | _Malformed,
        context: grpc.aio.ServicerContext,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return await self._calls.answer("GetModelStatus", context, lambda: self._status(_parsed(request)))

    async def _status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        status = tfserving.model_status(self._registry, spec.name, _selector(spec))
        return json_format.ParseDict(status, get_model_status_pb2.GetModelStatusResponse())


@dataclass(frozen=True)
class GrpcLimits:
    """What one client may take of the gRPC server: message size, connections, and how long a connection may
    sit in its handshake, idle, or unanswered by a dead peer."""

    max_message_bytes: int
    max_connections: int
    handshake_timeout_s: float
    idle_s: float
    # Ping a connection quiet for this long, and drop it if the ping is not answered within the timeout.
    keepalive_s: float = 60.0
    keepalive_timeout_s: float = 20.0

    @classmethod
    def of(cls, settings: Settings) -> GrpcLimits:
        return cls(
            # The same bound on what a client may send as GENSERVE_MAX_BODY_BYTES puts on HTTP bodies.
            max_message_bytes=settings.max_body_bytes,
            max_connections=connection_budget(settings.max_connections, listeners=2),
            handshake_timeout_s=settings.header_timeout_s,
            idle_s=settings.grpc_idle_s,
        )

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.server_handshake_timeout_ms", round(self.handshake_timeout_s * 1000)),
            ("grpc.max_connection_idle_ms", round(self.idle_s * 1000)),
            ("grpc.keepalive_time_ms", round(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(self.keepalive_timeout_s * 1000)),
        ]


class GrpcServer:
    """The gRPC API on `host:port`, started and stopped by the app's lifespan; text generators are served when
    `text` is given."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: ModelRegistry,
        inference: Inference,
        metrics: Metrics,
        limits: GrpcLimits,
        keys: ApiKeys | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.address = f"{host}:{port}"
        self._server = grpc.aio.server(options=limits.channel_options())
        calls = _Calls(metrics, keys, tracing)
        prediction, models = PredictionServicer(inference, calls), ModelServicer(registry, calls)
        self._server.add_generic_rpc_handlers(
            (
                _service(
                    PREDICTION_SERVICE,
                    {
                        "Predict": (
                            prediction.Predict,
                            predict_pb2.PredictRequest,
                            predict_pb2.PredictResponse,
                        ),
                        "GetModelMetadata": (
                            prediction.GetModelMetadata,
                            get_model_metadata_pb2.GetModelMetadataRequest,
                            get_model_metadata_pb2.GetModelMetadataResponse,
                        ),
                    },
                ),
                _service(
                    MODEL_SERVICE,
                    {
                        "GetModelStatus": (
                            models.GetModelStatus,
                            get_model_status_pb2.GetModelStatusRequest,
                            get_model_status_pb2.GetModelStatusResponse,
                        )
                    },
                ),
            )
        )

    async def start(self) -> None:
        if self._server.add_insecure_port(self.address) == 0:
            raise RuntimeError(f"cannot listen for gRPC on {self.address}")
        await self._server.start()
        logger.info("TensorFlow Serving gRPC API listening on %s", self.address)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and give those in progress up to `grace_s` to finish."""
        await self._server.stop(grace_s)
