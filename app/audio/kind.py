"""Sound generators as a kind of model: loading them, their batchers, and what they answer.

`AudioKind` loads the versions whose metadata describes a sound generator (`specgan`) and answers, for its
servables, `POST /generate` (a WAV of the clips in a row, a zip of WAVs, npy or JSON, from seeds or latents),
`GET /interpolate` (the clips along the path) and the inference protocols (latents and labels to float32
`audio`). It draws through the generation service and batcher image generators use (`app/latent/`): seeds map
to latents and clip i gets class i mod K exactly as images do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import Response
from starlette.requests import Request

from app.api import defaults, params
from app.api.schemas import GenerateBody, GenerateFormat
from app.audio.rendering import ClipFramesView, ClipsView
from app.audio.runtime import AudioRuntime
from app.audio.servable import AUDIO_FORMATS, AudioServable
from app.config import Settings
from app.latent.batching import Batcher
from app.latent.generation import Frames, GenerationService
from app.latent.kind import latent_batcher, latent_request, refuse_text_fields
from app.latent.rendering import Renderer, View
from app.metrics import Metrics
from app.server.errors import InvalidParameter
from app.serving.registry import ModelVersion
from app.serving.runtime import DeviceInfo
from app.serving.servable import CallContext, Tensors
from genserve import store
from genserve.store import ModelMetadata

_MAKES = "generates sound"
# What only image generators take in POST /generate.
_IMAGE_FIELDS = ("cols",)
# Interpolation formats of a sound generator, the default first.
_FRAME_FORMATS = ("wav", "flac", "zip", "npy")


class AudioKind:
    """Loads sound generators and serves them with the generation service and renderer images use."""

    def __init__(
        self, settings: Settings, metrics: Metrics, generation: GenerationService, renderer: Renderer
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.generation = generation
        self.renderer = renderer

    def serves(self, metadata: ModelMetadata) -> bool:
        return metadata.is_audio

    def load(self, path: Path, device: DeviceInfo) -> AudioServable:
        runtime = AudioRuntime(path, device)
        runtime.warm_up(self.settings.warmup_batch_sizes)
        return AudioServable(runtime, self)

    def batcher(self, name: str, version: int, runtime: AudioRuntime) -> Batcher:
        metrics = self.metrics
        observer = metrics.batch_observer(name, version, generated=metrics.clips_generated)
        on_cpu = runtime.device.kind == "CPU"
        return latent_batcher(
            self.settings, metrics, name, version, runtime.run, observer, on_cpu=on_cpu, unit="clips"
        )

    async def generate(
        self, model_version: ModelVersion, fields: GenerateBody, http_request: Request
    ) -> Response:
        """`POST /generate` for a sound generator: a WAV of the clips in a row, a zip of WAVs, npy or JSON."""
        format = _generate_format(fields, model_version)
        request = latent_request(fields, self.settings.max_clips, defaults.CLIPS)
        result = await self.generation.generate(model_version, request, http_request=http_request)
        view = ClipsView(result, include_latents=bool(fields.include_latents))
        return await self.renderer.render(view, format)

    async def infer(self, model_version: ModelVersion, inputs: Tensors, call: CallContext) -> Tensors:
        """Latents (and class indices) to float32 clips, through the version's batcher."""
        latents = inputs[store.LATENT_INPUT]
        params.check_range(store.LATENT_INPUT, len(latents), 1, self.settings.max_clips)
        result = await self.generation.for_latents(
            model_version,
            latents,
            inputs.get(store.LABEL_INPUT),
            timeout_s=call.timeout_s,
            http_request=call.http_request,
        )
        return {store.AUDIO_OUTPUT: result.outputs}

    def frames_rendering(
        self, format: str | None, *, steps: int, fps: int, cols: int | None
    ) -> ClipsRendering:
        """An interpolation's clips as one WAV in a row (the default), a zip of WAVs or npy; at most
        `GENSERVE_MAX_CLIPS` of them."""
        if cols is not None:
            raise InvalidParameter("cols", f"is for image generators; this model {_MAKES}")
        if format is not None and format not in _FRAME_FORMATS:
            raise InvalidParameter(
                "format", f"{format} is not a sound format; use {', '.join(_FRAME_FORMATS)}"
            )
        params.check_range("steps", steps, 2, self.settings.max_clips)
        return ClipsRendering(format or _FRAME_FORMATS[0])


@dataclass(frozen=True)
class ClipsRendering:
    """A sound generator's interpolation in one format."""

    format: str

    def view(self, frames: Frames) -> View:
        return ClipFramesView(frames)


def _generate_format(fields: GenerateBody, model_version: ModelVersion) -> str:
    """The answer's format (wav without one); a 422 naming the field for what only other kinds take."""
    refuse_text_fields(fields, model_version, _MAKES)
    for name in _IMAGE_FIELDS:
        if getattr(fields, name) is not None:
            raise InvalidParameter(name, f"is for image generators; {model_version.name!r} {_MAKES}")
    format = (fields.format or GenerateFormat.wav).value
    if format not in AUDIO_FORMATS:
        raise InvalidParameter(
            "format",
            f"{format} is for image generators; {model_version.name!r} answers {', '.join(AUDIO_FORMATS)}",
        )
    return format
