"""Prometheus metrics: this module owns every metric object; the rest of the app reports through it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from app.latent.batching import BatchReport
from app.server.asgi import WatchedSend
from app.server.in_flight import RequestsInFlight
from app.text.batching import StepReport
from genserve import store

logger = logging.getLogger(__name__)

NAMESPACE = "genserve"
# Generation on CPU takes milliseconds to a few seconds per batch; HTTP adds a little on top.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_IMAGE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)
BATCH_REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
STEP_SEQUENCE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
MODEL_LABELS = ("model", "version")


class Metrics:
    """All of the service's metrics, on a registry of their own (one per app)."""

    def __init__(self) -> None:
        # A `_created` timestamp beside every counter and histogram doubles the series count and no query here
        # reads it. The switch is process-wide, which suits a process that serves one app.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        self._build_http()
        self._build_grpc()
        self._build_generation()
        self._build_text()
        self._build_lifecycle()

    def _counter(self, name: str, doc: str, labels: tuple[str, ...]) -> Counter:
        return Counter(name, doc, labels, namespace=NAMESPACE, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        return Histogram(name, doc, labels, namespace=NAMESPACE, registry=self.registry, buckets=buckets)

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
        return Gauge(name, doc, labels, namespace=NAMESPACE, registry=self.registry)

    def _build_http(self) -> None:
        # HTTP requests and gRPC calls being served; the batchers also read it (see `RequestsInFlight`).
        self.requests_in_flight = RequestsInFlight()
        in_flight = self._gauge("requests_in_flight", "HTTP requests and gRPC calls being served.", ())
        in_flight.set_function(lambda: self.requests_in_flight.count)
        self.http_requests = self._counter(
            "http_requests",
            "HTTP requests answered, by route template and status.",
            ("route", "method", "status"),
        )
        self.key_requests = self._counter(
            "api_key_requests", "Requests and gRPC calls let in by an API key, by the key's name.", ("key",)
        )
        self.key_refusals = self._counter(
            "api_key_refusals",
            "Requests and gRPC calls refused for a missing or unknown API key.",
            ("reason",),
        )
        # Key names come from the operator's keys file, so these labels stay bounded.
        self.quota_refusals = self._counter(
            "quota_refusals",
            "Requests and gRPC calls refused (429) for being over their API key's quota, by key and unit.",
            ("key", "unit"),
        )
        self.quota_remaining = self._gauge(
            "quota_remaining",
            "What each API key's bucket holds now, in its unit (images or text tokens): the most one request may "
            "ask for at once.",
            ("key", "unit"),
        )
        self.connections_refused = self._counter(
            "http_connections_refused",
            "HTTP connections answered 503 and closed at once because the connection budget was spent.",
            (),
        )
        self.http_duration = self._histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ("route", "method"),
            LATENCY_BUCKETS,
        )

    def _build_grpc(self) -> None:
        # HTTP protocols are told apart by route template (/v2/... is the Open Inference Protocol, /v1/models/...
        # TensorFlow Serving's REST API); gRPC calls have no route, so they are counted here by method.
        self.grpc_requests = self._counter(
            "grpc_requests", "gRPC calls answered, by method and status code.", ("method", "code")
        )
        self.grpc_duration = self._histogram(
            "grpc_request_duration_seconds", "Time to answer a gRPC call.", ("method",), LATENCY_BUCKETS
        )

    def _build_generation(self) -> None:
        self.images_generated = self._counter(
            "images_generated", "Images produced by the model.", MODEL_LABELS
        )
        self.clips_generated = self._counter(
            "clips_generated", "Sound clips produced by sound generators.", MODEL_LABELS
        )
        self.images_encoded = self._counter(
            "images_encoded", "Uploaded images encoded to latents (VAEs).", MODEL_LABELS
        )
        self.queue_wait = self._histogram(
            "queue_wait_seconds",
            "Time an image waited in the queue before its model call.",
            MODEL_LABELS,
            LATENCY_BUCKETS,
        )
        self.model_call = self._histogram(
            "model_call_seconds", "Duration of one batched model call.", MODEL_LABELS, LATENCY_BUCKETS
        )
        self.render_duration = self._histogram(
            "render_seconds",
            "Time to render a response body (PNG, GIF, JSON, ...).",
            (*MODEL_LABELS, "format"),
            FAST_BUCKETS,
        )
        self.batch_images = self._histogram(
            "batch_size_images", "Images per model call, padding included.", MODEL_LABELS, BATCH_IMAGE_BUCKETS
        )
        self.batch_requests = self._histogram(
            "batch_size_requests", "Requests sharing one model call.", MODEL_LABELS, BATCH_REQUEST_BUCKETS
        )
        self.padding_images = self._counter(
            "padding_images", "Images added to reach an allowed batch size.", MODEL_LABELS
        )
        self.rejections = self._counter(
            "rejections", "Generation work dropped, by reason.", (*MODEL_LABELS, "reason")
        )
        self.queue_depth = self._gauge("queue_depth_images", "Images waiting for a model call.", MODEL_LABELS)
        self.in_flight = self._gauge("in_flight_images", "Images in the running model call.", MODEL_LABELS)
        self.image_cache_hits = self._counter(
            "image_cache_hits", "Image URL requests answered from the cache of rendered files.", MODEL_LABELS
        )
        self.image_cache_misses = self._counter(
            "image_cache_misses", "Image URL requests that had to draw and render their file.", MODEL_LABELS
        )
        self.image_cache_bytes = self._gauge("image_cache_bytes", "Bytes of rendered files cached.", ())

    def _build_text(self) -> None:
        self.text_tokens = self._counter(
            "text_tokens_generated", "Tokens sampled by text generators.", MODEL_LABELS
        )
        self.text_step_sequences = self._histogram(
            "text_step_sequences",
            "Sequences advanced by one text model call (continuous batching).",
            MODEL_LABELS,
            STEP_SEQUENCE_BUCKETS,
        )
        self.text_step_duration = self._histogram(
            "text_step_seconds", "Duration of one text model step.", MODEL_LABELS, FAST_BUCKETS
        )
        self.text_first_token = self._histogram(
            "text_time_to_first_token_seconds",
            "Time from a text request's arrival to its first sampled token.",
            MODEL_LABELS,
            LATENCY_BUCKETS,
        )
        self.text_queue_depth = self._gauge(
            "text_queue_depth_sequences", "Text sequences waiting for a place in the steps.", MODEL_LABELS
        )
        self.text_active = self._gauge(
            "text_active_sequences", "Text sequences advanced by each step.", MODEL_LABELS
        )

    def _build_lifecycle(self) -> None:
        self.model_loads = self._counter("model_loads", "Model versions loaded and warmed up.", ("model",))
        self.model_load_failures = self._counter(
            "model_load_failures", "Model versions that failed to load.", ("model",)
        )
        self.model_load_duration = self._histogram(
            "model_load_duration_seconds", "Time to load and warm up a version.", ("model",), LOAD_BUCKETS
        )
        self.model_info = self._gauge(
            "model_info",
            "1 for each loaded version, with its kind and device.",
            (*MODEL_LABELS, "kind", "device"),
        )
        self.store_scans = self._counter(
            "store_scans", "Scans of the model store, by result (ok, empty, error).", ("result",)
        )
        self.store_entries_skipped = self._counter(
            "store_entries_skipped",
            "Folders in the model store that name no model or version, counted once when they appear.",
            (),
        )
        self.ready = Gauge(
            "ready",
            "1 when the default model can serve, else 0.",
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def batch_observer(self, model: str, version: int, generated: Counter | None = None) -> BatchMetrics:
        """The observer of a version's batcher, counting what it generates in `generated` (images by default)."""
        return BatchMetrics(self, model, str(version), generated or self.images_generated)

    def text_observer(self, model: str, version: int) -> TextStepMetrics:
        return TextStepMetrics(self, model, str(version))

    def track_batcher(
        self, model: str, version: int, queued: Callable[[], int], in_flight: Callable[[], int]
    ) -> None:
        labels = {"model": model, "version": str(version)}
        self.queue_depth.labels(**labels).set_function(queued)
        self.in_flight.labels(**labels).set_function(in_flight)

    def track_quota(self, key: str, unit: str, level: Callable[[], float]) -> None:
        self.quota_remaining.labels(key=key, unit=unit).set_function(level)

    def quota_refused(self, key: str, unit: str) -> None:
        """Count one request refused for its key's quota; never raises."""
        try:
            self.quota_refusals.labels(key=key, unit=unit).inc()
        except Exception:
            logger.exception("failed to record quota metrics")

    def track_image_cache(self, size_bytes: Callable[[], int]) -> None:
        self.image_cache_bytes.set_function(size_bytes)

    def image_cache_lookup(self, model: str, version: int, *, hit: bool) -> None:
        """Count one image URL answered from the cache (`hit`) or drawn; never raises."""
        try:
            counter = self.image_cache_hits if hit else self.image_cache_misses
            counter.labels(model=model, version=str(version)).inc()
        except Exception:
            logger.exception("failed to record image cache metrics")

    def loaded(self, model: str, version: int, kind: str, device: str, seconds: float) -> None:
        self.model_loads.labels(model=model).inc()
        self.model_load_duration.labels(model=model).observe(seconds)
        self.model_info.labels(model=model, version=str(version), kind=kind, device=device).set(1)

    def unloaded(self, model: str, version: int, kind: str, device: str) -> None:
        removals = [
            (self.model_info, (model, str(version), kind, device)),
            (self.queue_depth, (model, str(version))),
            (self.in_flight, (model, str(version))),
            (self.text_queue_depth, (model, str(version))),
            (self.text_active, (model, str(version))),
        ]
        for gauge, labels in removals:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def store_scanned(self, result: str) -> None:
        self.store_scans.labels(result=result).inc()

    def store_entry_skipped(self) -> None:
        self.store_entries_skipped.inc()

    def load_failed(self, model: str) -> None:
        self.model_load_failures.labels(model=model).inc()

    def rejected(self, model: str, version: int, reason: str) -> None:
        self.rejections.labels(model=model, version=str(version), reason=reason).inc()

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        """Count one answered gRPC call; never raises, like every metric a request reports."""
        try:
            self.grpc_requests.labels(method=method, code=code).inc()
            self.grpc_duration.labels(method=method).observe(seconds)
        except Exception:
            logger.exception("failed to record gRPC metrics")

    def observe_render(self, model: str, version: int, response_format: str, seconds: float) -> None:
        self.render_duration.labels(model=model, version=str(version), format=response_format).observe(
            seconds
        )


class _VersionSeries:
    """One model version's series of each metric, looked up once: a batcher reports on every model call, and
    `labels()` (validation, a lock and a lookup) would otherwise be paid again each time."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self._labels = {"model": model, "version": version}
        self._series: dict[tuple[int, str], Any] = {}

    def _of(self, metric: Any, reason: str = "") -> Any:
        key = (id(metric), reason)
        series = self._series.get(key)
        if series is None:
            extra = {"reason": reason} if reason else {}
            series = self._series[key] = metric.labels(**self._labels, **extra)
        return series

    def on_reject(self, reason: str) -> None:
        self._of(self._metrics.rejections, reason).inc()


class BatchMetrics(_VersionSeries):
    """The batcher's observer for one model version; never lets a metrics error reach a request."""

    def __init__(self, metrics: Metrics, model: str, version: str, generated: Counter) -> None:
        super().__init__(metrics, model, version)
        self._generated = generated

    def on_batch(self, report: BatchReport) -> None:
        metrics = self._metrics
        encoded = store.IMAGES_INPUT in report.inputs
        self._of(metrics.images_encoded if encoded else self._generated).inc(report.images)
        self._of(metrics.model_call).observe(report.model_call_s)
        self._of(metrics.batch_images).observe(report.images)
        self._of(metrics.batch_requests).observe(report.requests)
        if report.padding:
            self._of(metrics.padding_images).inc(report.padding)
        histogram = self._of(metrics.queue_wait)
        for wait in report.queue_wait_s:
            histogram.observe(wait)


class TextStepMetrics(_VersionSeries):
    """The text batcher's observer for one model version; never lets a metrics error reach a request."""

    def on_step(self, report: StepReport) -> None:
        metrics = self._metrics
        self._of(metrics.text_tokens).inc(report.generated_tokens)
        self._of(metrics.text_step_sequences).observe(report.sequences)
        self._of(metrics.text_step_duration).observe(report.step_s)

    def on_first_token(self, seconds: float) -> None:
        self._of(self._metrics.text_first_token).observe(seconds)

    def on_sequences(self, active: int, queued: int) -> None:
        self._of(self._metrics.text_active).set(active)
        self._of(self._metrics.text_queue_depth).set(queued)


class HTTPMetricsMiddleware:
    """Counts and times every HTTP request by its route template, never by raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # By route template, method and status: a bounded set, each looked up once (see _VersionSeries).
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        watched = WatchedSend(send)
        try:
            with self.metrics.requests_in_flight.serving():
                await self.app(scope, receive, watched)
        finally:
            self._record(scope, watched.status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        try:
            key = (_route_template(scope), str(scope.get("method", "")), status)
            series = self._series.get(key)
            if series is None:
                route, method, _ = key
                series = self._series[key] = (
                    self.metrics.http_requests.labels(route=route, method=method, status=str(status)),
                    self.metrics.http_duration.labels(route=route, method=method),
                )
            requests, duration = series
            requests.inc()
            duration.observe(seconds)
        except Exception:  # metrics must never break a request
            logger.exception("failed to record HTTP metrics")


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
