"""Traces over OpenTelemetry, exported over OTLP/HTTP; off (no tracer provider, no work) without an endpoint.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (traces go to `<url>/v1/traces`) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the
full URL) set, read through `Settings`, the lifespan starts a tracer provider of its own (the process-wide one is
left alone) whose spans a batch processor posts to the collector, and shuts it down, flushed, on exit. Spans:

- the HTTP request (`POST /generate`, a server span named by its route template) or the gRPC call
  (`tensorflow.serving.PredictionService/Predict`), a child of the client's W3C `traceparent` (header or gRPC
  metadata); the HTTP answer names it in `traceresponse`, in `traceparent`'s format;
- `queue wait`, one per request a batch carries: from the moment its images were queued to its batch's start;
- `batch`: one model call's work, a child of the first request it carries and linked to every request's span (so
  the others find it by their links); `model call` below it, on the model's thread;
- `render`: the answer's body (PNG, JSON, ...), and `text generate` for a text request's sequences.

They carry the model, version, images asked for (`genserve.n`) and the batch's size. Each request's span is kept in
the OpenTelemetry context and the tracer in a context variable set only by the middleware and the gRPC wrapper, so
with tracing off the helpers here read one context variable and return; work queued for a batch notes where its
request's span is (`queued`), because the batch starts elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from app.server.asgi import HttpMiddleware, WatchedSend

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

T = TypeVar("T")
AttributeValue = str | int | float | bool

TRACE_RESPONSE_HEADER = b"traceresponse"
_PREFIX = "genserve."
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()
# The tracer of the request or call being served; None (the default everywhere) while tracing is off.
_tracer: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("genserve_tracer", default=None)


class Tracing:
    """The service's tracer provider and OTLP/HTTP exporter, started and shut down by the lifespan."""

    def __init__(self, endpoint: str, service_name: str, *, schedule_delay_ms: float = 2000.0) -> None:
        self.endpoint = endpoint
        self.service_name = service_name
        self.schedule_delay_ms = schedule_delay_ms
        self.tracer: Tracer | None = None
        self._provider: TracerProvider | None = None

    def start(self) -> None:
        # Imported here: without an endpoint the SDK and the exporter are never loaded.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource({"service.name": self.service_name}))
        exporter = OTLPSpanExporter(endpoint=self.endpoint)
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=self.schedule_delay_ms)
        )
        self._provider = provider
        self.tracer = provider.get_tracer("genserve")

    def shutdown(self) -> None:
        """Export what is left and stop the exporter's thread."""
        if self._provider is not None:
            self.tracer = None
            self._provider.shutdown()
            self._provider = None


class TracingMiddleware(HttpMiddleware):
    """A server span around each HTTP request, a child of its `traceparent`, named in the answer's
    `traceresponse`; installed only when tracing is on."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        super().__init__(app)
        self.tracing = tracing

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracing.tracer
        if tracer is None:  # the lifespan has not started it (or has shut it down)
            await self.app(scope, receive, send)
            return
        method, path = str(scope.get("method", "")), str(scope.get("path", ""))
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        attributes = {"http.request.method": method, "url.path": path}
        with serving(tracer, method, carrier, attributes) as span:
            watched = WatchedSend(send, [(TRACE_RESPONSE_HEADER, _traceparent(span.get_span_context()))])
            try:
                await self.app(scope, receive, watched)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", str(route))
                span.set_attribute("http.response.status_code", watched.status)
                if watched.status >= 500:
                    span.set_status(StatusCode.ERROR)


@contextlib.contextmanager
def serving(
    tracer: Tracer, name: str, carrier: Mapping[str, str], attributes: Mapping[str, AttributeValue]
) -> Iterator[Span]:
    """A server span, current while a request or call is served: a child of the `traceparent` in `carrier`
    (headers or gRPC metadata), with the tracer in the context for the helpers below."""
    token = _tracer.set(tracer)
    try:
        with tracer.start_as_current_span(
            name, context=_PROPAGATOR.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span
    finally:
        _tracer.reset(token)


def grpc_call(
    tracing: Tracing | None, name: str, metadata: Mapping[str, str]
) -> AbstractContextManager[Span | None]:
    """The server span of one gRPC call (`service/method`), or nothing when tracing is off."""
    tracer = None if tracing is None else tracing.tracer
    if tracer is None:
        return _NO_SPAN
    service, _, method = name.rpartition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    return serving(tracer, name, metadata, attributes)


def span(name: str, **attributes: AttributeValue) -> AbstractContextManager[Span | None]:
    """A span below the current one while the block runs (`genserve.` before each attribute's name); nothing
    when tracing is off."""
    tracer = _tracer.get()
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=_named(attributes))


def annotate(**attributes: AttributeValue) -> None:
    """Attributes (`genserve.` before each name) on the current span, when tracing is on."""
    if _tracer.get() is not None:
        trace.get_current_span().set_attributes(_named(attributes))


def open_span(name: str, **attributes: AttributeValue) -> Span | None:
    """A span below the current one that the caller ends (`close`), for work that outlives the block that starts
    it; None when tracing is off."""
    tracer = _tracer.get()
    if tracer is None:
        return None
    return tracer.start_span(name, attributes=_named(attributes))


def close(opened: Span | None, **attributes: AttributeValue) -> None:
    """End a span from `open_span` with last attributes; a span already ended is left as it is."""
    if opened is not None and opened.is_recording():
        opened.set_attributes(_named(attributes))
        opened.end()


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex, for log lines; None when there is none."""
    if _tracer.get() is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@dataclass(frozen=True)
class Queued:
    """Where a request's span is, noted when its work is queued for a batch that starts elsewhere."""

    tracer: Tracer
    context: SpanContext
    queued_ns: int


def queued() -> Queued | None:
    """The current request's place in its trace, for the batch that will carry its work; None when off."""
    tracer = _tracer.get()
    if tracer is None:
        return None
    return Queued(tracer, trace.get_current_span().get_span_context(), time.time_ns())


class BatchTrace:
    """The `batch` span of one model call and the `queue wait` span of each request it carries."""

    def __init__(
        self,
        requests: Sequence[tuple[Queued, int]],
        attributes: Mapping[str, AttributeValue],
        batch_attributes: Mapping[str, AttributeValue],
    ) -> None:
        # The batch goes in the trace of the first request that is sampled (else the first), which it links to
        # like every other.
        first = next(
            (request for request, _ in requests if request.context.trace_flags.sampled), requests[0][0]
        )
        self._tracer = first.tracer
        started = time.time_ns()
        for request, images in requests:
            parent = trace.set_span_in_context(NonRecordingSpan(request.context))
            waited = self._tracer.start_span(
                "queue wait",
                context=parent,
                start_time=request.queued_ns,
                attributes={**attributes, f"{_PREFIX}n": images},
            )
            waited.end(end_time=started)
        self._span = self._tracer.start_span(
            "batch",
            context=trace.set_span_in_context(NonRecordingSpan(first.context)),
            links=[Link(request.context) for request, _ in requests],
            attributes={**attributes, **batch_attributes},
            start_time=started,
        )
        self._attributes = attributes

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` (the model call, on the model's thread) in a `model call` span below the batch."""
        with self._tracer.start_as_current_span(
            "model call", context=trace.set_span_in_context(self._span), attributes=self._attributes
        ):
            return function()

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            self._span.set_status(StatusCode.ERROR, type(error).__name__)
        self._span.end()


def start_batch(
    requests: Sequence[tuple[Queued | None, int]],
    attributes: Mapping[str, AttributeValue],
    /,
    **batch_attributes: AttributeValue,
) -> BatchTrace | None:
    """The trace of a batch of (request's place, images) pairs; None when none of its requests is traced."""
    traced = [(request, images) for request, images in requests if request is not None]
    if not traced:
        return None
    return BatchTrace(traced, attributes, _named(batch_attributes))


def named(**attributes: AttributeValue) -> dict[str, AttributeValue]:
    """Attribute names as spans carry them: `genserve.model`, `genserve.version`, ..."""
    return _named(attributes)


def _named(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    return {_PREFIX + name: value for name, value in attributes.items()}


def _traceparent(context: SpanContext) -> bytes:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}".encode()
