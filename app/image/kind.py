"""Image generators as a kind of model: loading them, their batchers, and what they answer.

`ImageKind` loads image generators (GANs, conditional GANs, VAEs) and answers, for its servables,
`POST /generate` (a PNG grid, JSON, npy or zip of images from seeds or latents), `GET /interpolate` (a frame
strip, an animation or JSON) and the inference protocols (latents and labels to uint8 images), with the batcher
and request checks every generator that draws from latents shares (`app/latent/kind.py`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import Response
from starlette.requests import Request

from app.api import defaults
from app.api.schemas import GenerateBody, GenerateFormat
from app.config import Settings
from app.image.rendering import FramesView, GeneratedView
from app.image.runtime import ImageRuntime
from app.image.servable import ImageServable
from app.latent.batching import Batcher
from app.latent.generation import Frames, GenerationService
from app.latent.kind import latent_batcher, latent_request, refuse_text_fields
from app.latent.rendering import Renderer, View
from app.metrics import Metrics
from app.server.errors import InvalidParameter
from app.serving.compiled_calls import ChoiceCache
from app.serving.registry import ModelVersion
from app.serving.runtime import DeviceInfo
from app.serving.servable import CallContext, Tensors
from genserve import store
from genserve.store import ModelMetadata

# Interpolation formats only a sound generator answers.
_SOUND_FORMATS = ("wav", "zip", "npy")


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
        on_cpu = runtime.device.kind == "CPU"
        observer = self.metrics.batch_observer(name, version)
        return latent_batcher(
            self.settings, self.metrics, name, version, runtime.run, observer, on_cpu=on_cpu
        )

    async def generate(
        self, model_version: ModelVersion, fields: GenerateBody, http_request: Request
    ) -> Response:
        """`POST /generate` for an image generator: a PNG grid, JSON, npy or zip of its images."""
        request = latent_request(fields, self.settings.max_n, defaults.IMAGES)
        _refuse_other_fields(fields, model_version)
        result = await self.generation.images(model_version, request, http_request=http_request)
        view = GeneratedView(result, cols=fields.cols, include_latents=bool(fields.include_latents))
        return await self.renderer.render(view, (fields.format or GenerateFormat.png).value)

    async def infer(self, model_version: ModelVersion, inputs: Tensors, call: CallContext) -> Tensors:
        """Latents (and class indices) to uint8 images, through the version's batcher."""
        result = await self.generation.for_latents(
            model_version,
            inputs[store.LATENT_INPUT],
            inputs.get(store.LABEL_INPUT),
            timeout_s=call.timeout_s,
            http_request=call.http_request,
        )
        return {store.IMAGES_OUTPUT: result.outputs}

    def frames_rendering(
        self, format: str | None, *, steps: int, fps: int, cols: int | None
    ) -> AnimationRendering:
        """An interpolation's frames as a PNG strip (the default), a GIF or WebP animation, or JSON."""
        if format in _SOUND_FORMATS:
            raise InvalidParameter("format", f"{format} is for sound generators; use png, gif, webp or json")
        return AnimationRendering(format or GenerateFormat.png.value, fps, cols)


@dataclass(frozen=True)
class AnimationRendering:
    """An image generator's interpolation in one format: frames as `FramesView` renders them."""

    format: str
    fps: int
    cols: int | None

    def view(self, frames: Frames) -> View:
        return FramesView(frames, self.fps, self.cols)


def _refuse_other_fields(fields: GenerateBody, model_version: ModelVersion) -> None:
    """422 for text-only fields (or format=text) and sound formats sent to an image generator."""
    refuse_text_fields(fields, model_version, "generates images")
    if fields.format is GenerateFormat.wav:
        raise InvalidParameter(
            "format", f"wav is for sound generators; {model_version.name!r} generates images"
        )
