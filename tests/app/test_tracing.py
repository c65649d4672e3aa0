"""OpenTelemetry traces, received by a real OTLP/HTTP endpoint: a request's span continues its caller's trace,
and its wait in the queue, its batch (linked to every request it carries), the model call and the rendering are
spans of their own; without an endpoint nothing is traced."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider

from app.server import tracing
from app.server.logs import JsonFormatter, _RequestIdFilter
from app.server.tracing import TracingMiddleware
from tests.app.helpers import running_app
from tests.app.protocol_helpers import TIMEOUT_S, predict_request, seeded_latents, serving
from tests.conftest import TINY_MODEL

CALLER_TRACES = ("0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736")
CALLER_SPANS = ("b7ad6b7169203331", "00f067aa0ba902b7")
SERVER_KIND = Span.SpanKind.SPAN_KIND_SERVER


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint on a free port: POST /v1/traces, protobuf, spans kept in `spans`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ExportHandler)
        self.spans: list[Span] = []
        self.service_names: set[str] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [span for span in self.spans if span.name == name]


class _ExportHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        export = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource_spans in export.resource_spans:
                self.server.service_names |= {
                    item.value.string_value
                    for item in resource_spans.resource.attributes
                    if item.key == "service.name"
                }
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend(scope_spans.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def attributes(span: Span) -> dict[str, Any]:
    return {item.key: getattr(item.value, item.value.WhichOneof("value")) for item in span.attributes}


def traceparent(index: int) -> str:
    return f"00-{CALLER_TRACES[index]}-{CALLER_SPANS[index]}-01"


def test_requests_sharing_a_batch_are_traced_from_their_traceparent_to_the_model_call(
    tiny_store: Path, receiver: Receiver
) -> None:
    async def scenario() -> list[httpx.Response]:
        # A batch closes when it holds two images, so the two requests share one.
        async with running_app(
            tiny_store,
            otlp_endpoint=receiver.url,
            max_batch_size=2,
            max_delay_ms=60_000,
            adaptive_delay=False,
        ) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            "/generate",
                            params={"n": 1, "seed": index},
                            headers={"traceparent": traceparent(index)},
                        )
                        for index in range(2)
                    )
                )
            )

    answers = asyncio.run(scenario())  # the lifespan's exit flushes the spans to the receiver

    assert [answer.status_code for answer in answers] == [200, 200]
    requests = {span.trace_id.hex(): span for span in receiver.named("POST /generate")}
    assert sorted(requests) == sorted(CALLER_TRACES)
    for index, answer in enumerate(answers):
        request = requests[CALLER_TRACES[index]]
        assert request.kind == SERVER_KIND and request.parent_span_id.hex() == CALLER_SPANS[index]
        assert answer.headers["traceresponse"] == f"00-{CALLER_TRACES[index]}-{request.span_id.hex()}-01"
        assert attributes(request) | {
            "http.route": "/generate",
            "http.response.status_code": 200,
        } == attributes(request)
        assert attributes(request)["genserve.model"] == TINY_MODEL
    request_ids = {request.span_id for request in requests.values()}
    waits = receiver.named("queue wait")
    assert {wait.parent_span_id for wait in waits} == request_ids
    assert all(
        attributes(wait) == {"genserve.model": TINY_MODEL, "genserve.version": 1, "genserve.n": 1}
        for wait in waits
    )
    [batch] = receiver.named("batch")
    assert {(link.trace_id.hex(), link.span_id) for link in batch.links} == {
        (request.trace_id.hex(), request.span_id) for request in requests.values()
    }
    assert batch.parent_span_id in request_ids  # the first request's trace holds the batch
    assert attributes(batch) == {
        "genserve.model": TINY_MODEL,
        "genserve.version": 1,
        "genserve.images": 2,
        "genserve.batch_size": 2,
        "genserve.requests": 2,
    }
    [model_call] = receiver.named("model call")
    assert model_call.parent_span_id == batch.span_id and model_call.trace_id == batch.trace_id
    renders = receiver.named("render")
    assert {render.parent_span_id for render in renders} == request_ids
    assert {attributes(render)["genserve.format"] for render in renders} == {"png"}
    assert receiver.service_names == {"genserve"}


def test_a_grpc_call_is_a_server_span_of_its_callers_trace(tiny_store: Path, receiver: Receiver) -> None:
    metadata = [("traceparent", traceparent(0))]
    request = predict_request(TINY_MODEL, z=tf.make_tensor_proto(seeded_latents([1, 2])))
    with serving(tiny_store, otlp_traces_endpoint=f"{receiver.url}/v1/traces") as served:
        served.prediction.Predict(request, timeout=TIMEOUT_S, metadata=metadata)

    [call] = receiver.named("tensorflow.serving.PredictionService/Predict")
    assert call.kind == SERVER_KIND and call.trace_id.hex() == CALLER_TRACES[0]
    assert call.parent_span_id.hex() == CALLER_SPANS[0]
    assert attributes(call)["rpc.grpc.status_code"] == 0 and attributes(call)["genserve.n"] == 2
    [wait] = [span for span in receiver.named("queue wait") if span.parent_span_id == call.span_id]
    assert attributes(wait)["genserve.n"] == 2


def test_without_an_endpoint_nothing_is_traced(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 1, "seed": 1}, headers={"traceparent": traceparent(0)})

    assert response.status_code == 200 and "traceresponse" not in response.headers
    assert client.app.state.tracing is None  # type: ignore[attr-defined]
    assert all(middleware.cls is not TracingMiddleware for middleware in client.app.user_middleware)  # type: ignore[attr-defined]
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # no provider was installed
    assert tracing.queued() is None and tracing.current_ids() is None


def test_json_log_lines_carry_the_current_trace_id() -> None:
    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "inside", None, None)
    with tracing.serving(tracer, "GET /models", {"traceparent": traceparent(1)}, {}) as span:
        _RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
        span_id = f"{span.get_span_context().span_id:016x}"
    outside = logging.LogRecord("app", logging.INFO, __file__, 1, "outside", None, None)
    _RequestIdFilter().filter(outside)

    assert (line["trace_id"], line["span_id"]) == (CALLER_TRACES[1], span_id)
    assert "trace_id" not in json.loads(JsonFormatter().format(outside))
