"""Builds the FastAPI application: `create_app(settings)` and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import anyio
from fastapi import FastAPI

from app.api.routes import api_router
from app.audio.kind import AudioKind
from app.config import Settings
from app.image.kind import ImageKind
from app.image.seed_files import SeedFiles
from app.image.uploads import UploadLimits, UploadReader
from app.latent.generation import GenerationService
from app.latent.rendering import Renderer, RenderOptions
from app.metrics import HTTPMetricsMiddleware, Metrics
from app.playground.routes import install_playground
from app.protocols.inference import Inference
from app.protocols.openai.serving import Completions
from app.server.api_keys import ApiKeyMiddleware, ApiKeys
from app.server.body_limit import BodyLimitMiddleware
from app.server.cors import install_cors
from app.server.docs import install_docs
from app.server.error_handlers import install_error_handlers
from app.server.logs import RequestIdMiddleware
from app.server.quotas import Quotas, parse_quota
from app.server.shutdown import AdmissionMiddleware
from app.server.tracing import Tracing, TracingMiddleware
from app.serving.loader import ModelLoader
from app.serving.registry import ModelRegistry
from app.serving.runtime import configure_devices
from app.serving.servable import ModelKinds
from app.serving.store_watcher import StoreWatcher
from app.serving.version_policy import VersionPolicy
from app.text.generation import TextGenerationService
from app.text.kind import TextKind

if TYPE_CHECKING:
    from app.protocols.tfserving.grpc_server import GrpcServer

logger = logging.getLogger(__name__)

_DESCRIPTION = (
    "Images and latent interpolations from GANs and VAEs, text from char-rnns and sound from SpecGANs trained "
    "with genserve, batched across requests."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for `settings` (read from GENSERVE_* environment variables when not given)."""
    app = FastAPI(
        title="genserve",
        description=_DESCRIPTION,
        version="0.1.0",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings or Settings()
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(AdmissionMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=app.state.settings.max_body_bytes,
        max_upload_body_bytes=upload_limits(app.state.settings).body_bytes(
            app.state.settings.max_upload_images
        ),
    )
    # A bad keys file stops start-up here, with the reason.
    settings = app.state.settings
    app.state.api_keys = ApiKeys.load(settings.api_keys_file) if settings.api_keys_file is not None else None
    if app.state.api_keys is not None:
        app.add_middleware(ApiKeyMiddleware, keys=app.state.api_keys, metrics=app.state.metrics)
    # The keys' buckets; the lifespan hands them to the services that know each request's size.
    app.state.quotas = Quotas(parse_quota(settings.quota_default or ""), app.state.metrics)
    # Outside the key check: a browser's preflight carries no key, and a refusal must still be readable by the page.
    install_cors(app, settings.cors_origins)
    # Outermost, so it also sees the 500s produced by the error middleware.
    app.add_middleware(HTTPMetricsMiddleware, metrics=app.state.metrics)
    # Around everything: the request's id is on every line logged while it is served.
    app.add_middleware(RequestIdMiddleware)
    # Around that, with an OTLP endpoint only: the access line and every log line carry the trace id.
    endpoint = settings.traces_endpoint
    app.state.tracing = None if endpoint is None else Tracing(endpoint, settings.service_name)
    if app.state.tracing is not None:
        app.add_middleware(TracingMiddleware, tracing=app.state.tracing)
    app.include_router(api_router)
    install_docs(app)
    install_playground(app)
    return app


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_bytes=settings.max_upload_bytes,
        max_side=settings.max_upload_side,
        max_pixels=settings.max_upload_pixels,
        max_request_pixels=settings.max_request_pixels,
        max_files=settings.max_upload_images,
    )


def _make_watcher(
    settings: Settings, metrics: Metrics, registry: ModelRegistry, kinds: ModelKinds
) -> StoreWatcher:
    return StoreWatcher(
        registry,
        ModelLoader(kinds, metrics, load_timeout_s=settings.load_timeout_s),
        metrics,
        policy=VersionPolicy.parse(settings.version_policy),
        poll_interval_s=settings.poll_interval_s,
        retry_initial_s=settings.load_retry_initial_s,
        retry_max_s=settings.load_retry_max_s,
        drain_timeout_s=settings.request_timeout_s,
    )


async def _start_watching(watcher: StoreWatcher, settings: Settings) -> None:
    device = await anyio.to_thread.run_sync(
        configure_devices,
        settings.gpu_memory_limit_mb,
        settings.intra_op_threads,
        settings.tf_inter_op_threads,
        settings.tf_cpu_bfloat16,
    )
    await watcher.start(device)


async def _start_grpc(
    settings: Settings,
    metrics: Metrics,
    registry: ModelRegistry,
    inference: Inference,
    keys: ApiKeys | None,
    tracing: Tracing | None,
) -> GrpcServer | None:
    """TensorFlow Serving's gRPC API on GENSERVE_GRPC_PORT, or None when it is unset."""
    if settings.grpc_port is None:
        return None
    # Its messages are TensorFlow's protos, so importing it imports TensorFlow: seconds, off the event loop.
    await anyio.to_thread.run_sync(importlib.import_module, "app.protocols.tfserving.grpc_server")
    from app.protocols.tfserving.grpc_server import GrpcLimits, GrpcServer

    server = GrpcServer(
        settings.host,
        settings.grpc_port,
        registry=registry,
        inference=inference,
        metrics=metrics,
        limits=GrpcLimits.of(settings),
        keys=keys,
        tracing=tracing,
    )
    await server.start()
    return server


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    registry = ModelRegistry(settings.model_store, default_model=settings.default_model)
    metrics.ready.set_function(lambda: 1.0 if registry.is_ready() else 0.0)
    app.state.registry = registry
    app.state.generation = GenerationService(settings.request_timeout_s, metrics, registry, app.state.quotas)
    render_pool = ThreadPoolExecutor(max_workers=settings.render_threads, thread_name_prefix="render")
    app.state.renderer = Renderer(
        metrics, render_pool, RenderOptions(settings.png_compress_level, metadata=settings.image_metadata)
    )
    app.state.seed_files = SeedFiles(
        app.state.generation, app.state.renderer, metrics, settings.image_cache_bytes
    )
    app.state.text_generation = TextGenerationService(
        settings.request_timeout_s, metrics, registry, app.state.quotas
    )
    # The kinds of model served, one line each; a version goes to the first kind that serves its metadata.
    kinds = ModelKinds(
        [
            ImageKind(settings, metrics, app.state.generation, app.state.renderer),
            TextKind(settings, metrics, app.state.text_generation),
            AudioKind(settings, metrics, app.state.generation, app.state.renderer),
        ]
    )
    watcher = _make_watcher(settings, metrics, registry, kinds)
    app.state.watcher = watcher
    app.state.inference = Inference(registry, settings.max_n)
    app.state.completions = Completions(settings, registry, app.state.text_generation)
    app.state.upload_reader = UploadReader(upload_limits(settings), settings.max_concurrent_decodes)
    tracing: Tracing | None = app.state.tracing
    if tracing is not None:
        tracing.start()
    grpc_server = await _start_grpc(
        settings, metrics, registry, app.state.inference, app.state.api_keys, tracing
    )
    # Models load in the background so /healthz answers at once and /readyz reports progress.
    loading = asyncio.create_task(_start_watching(watcher, settings), name="genserve-load-models")
    try:
        yield
    finally:
        registry.begin_draining()
        if grpc_server is not None:
            await grpc_server.stop(settings.shutdown_grace_s)
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        await watcher.close()
        render_pool.shutdown(wait=False, cancel_futures=True)
        if tracing is not None:
            # Flushes the spans not exported yet; on a worker thread, as it may wait on the collector.
            await anyio.to_thread.run_sync(tracing.shutdown)
