"""Image generators as a kind of model: loading them, their batchers, and what they answer.

`ImageKind` loads every version that is not a text generator (GANs, conditional GANs, VAEs) and answers, for
its servables, `POST /generate` (a PNG grid, JSON, npy or zip of images from seeds or latents) and the
inference protocols (latents and labels to uint8 images).
"""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi.responses import Response
from starlette.requests import Request

from app.api import defaults, params
from app.api.schemas import GenerateBody, GenerateFormat
from app.config import Settings
from app.image.batching import Batcher, BatchingConfig
from app.image.generation import GenerationService, ImageRequest
from app.image.rendering import GeneratedView, Renderer
from app.image.runtime import ImageRuntime
from app.image.servable import ImageServable
from app.metrics import Metrics
from app.server import tracing
from app.server.errors import InvalidParameter
from app.serving.compiled_calls import ChoiceCache
from app.serving.registry import ModelVersion
from app.serving.runtime import DeviceInfo
from app.serving.servable import CallContext, Tensors
from app.text.params import TEXT_FIELDS
from genserve import store
from genserve.store import ModelMetadata


class ImageKind:
    """Loads image generators (GANs, conditional GANs, VAEs) and serves them with the services they share."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        generation: GenerationService,
        renderer: Renderer,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.generation = generation
        self.renderer = renderer
        # The versions' model-call tunings run one at a time, so each times its calls alone.
        self._tuning = threading.Lock()

    def serves(self, metadata: ModelMetadata) -> bool:
        return metadata.kind in store.IMAGE_KINDS

    def load(self, path: Path, device: DeviceInfo) -> ImageServable:
        runtime = ImageRuntime(path, device)
        runtime.warm_up(self.settings.warmup_batch_sizes)
        return ImageServable(runtime, self)

    def tune_calls(self, runtime: ImageRuntime, name: str, version: int) -> None:
        """Start choosing the version's model call by measurement, unless `compiled_calls` is off."""
        settings = self.settings
        if settings.compiled_calls == "off":
            return
        cache = None
        if settings.model_call_cache is not None:
            cache = ChoiceCache(settings.model_call_cache, runtime.path, settings.intra_op_threads)
        runtime.tune_calls(settings.max_batch_size, cache, self._tuning, f"{name}:{version}")

    def batcher(self, name: str, version: int, runtime: ImageRuntime) -> Batcher:
        settings, metrics = self.settings, self.metrics
        on_cpu = runtime.device.kind == "CPU"
        config = BatchingConfig(
            max_batch_size=settings.max_batch_size,
            max_delay_ms=settings.max_delay_ms,
            max_queue_images=settings.max_queue_images,
            allowed_batch_sizes=tuple(settings.allowed_batch_sizes),
            max_concurrent_batches=settings.max_concurrent_batches,
            adaptive_delay=settings.adaptive_delay,
            share_between_slots=on_cpu,
            inline_lone_calls=on_cpu,
        )
        batcher = Batcher(
            runtime.run,
            config,
            name=f"{name}:{version}",
            observer=metrics.batch_observer(name, version),
            alone=metrics.requests_in_flight.alone,
            trace_attributes=tracing.named(model=name, version=version),
        )
        metrics.track_batcher(name, version, lambda: batcher.queued_images, lambda: batcher.in_flight_images)
        return batcher

    async def generate(
        self, model_version: ModelVersion, fields: GenerateBody, http_request: Request
    ) -> Response:
        """`POST /generate` for an image generator: a PNG grid, JSON, npy or zip of its images."""
        request = image_request(fields, self.settings.max_n)
        _refuse_text_fields(fields, model_version)
        result = await self.generation.images(model_version, request, http_request=http_request)
        view = GeneratedView(result, cols=fields.cols, include_latents=bool(fields.include_latents))
        return await self.renderer.render(view, (fields.format or GenerateFormat.png).value)

    async def infer(self, model_version: ModelVersion, inputs: Tensors, call: CallContext) -> Tensors:
        """Latents (and class indices) to uint8 images, through the version's batcher."""
        result = await self.generation.images_for_latents(
            model_version,
            inputs[store.LATENT_INPUT],
            inputs.get(store.LABEL_INPUT),
            timeout_s=call.timeout_s,
            http_request=call.http_request,
        )
        return {store.IMAGES_OUTPUT: result.images}


def image_request(fields: GenerateBody, max_n: int) -> ImageRequest:
    """The images asked for: the checks that need no model."""
    psi = params.check_truncation(fields.truncation)
    if fields.cols is not None:
        params.check_range("cols", fields.cols, 1, max_n)
    if fields.latents is None:
        count = params.check_range("n", defaults.IMAGES if fields.n is None else fields.n, 1, max_n)
        return ImageRequest(seeds=params.seed_range(fields.seed, count), truncation=psi, label=fields.label)
    if fields.seed is not None:
        raise InvalidParameter("seed", "give either seed or latents, not both")
    latents = params.parse_latents(fields.latents, max_n)
    if fields.n is not None and fields.n != len(latents):
        raise InvalidParameter("n", f"is {fields.n} but {len(latents)} latents were given")
    return ImageRequest(latents=latents, truncation=psi, label=fields.label)


def _refuse_text_fields(fields: GenerateBody, model_version: ModelVersion) -> None:
    """422 for text-only fields (or format=text) sent to an image generator."""
    for name in TEXT_FIELDS:
        if getattr(fields, name) is not None:
            raise InvalidParameter(name, f"is for text generators; {model_version.name!r} generates images")
    if fields.format is GenerateFormat.text:
        raise InvalidParameter(
            "format", f"text is for text generators; {model_version.name!r} generates images"
        )
