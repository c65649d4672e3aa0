"""The generation pipeline: a parsed request to a generator's outputs, through a model version's batcher, within a
deadline.

Routes parse fields into a `LatentRequest` or `InterpolationRequest`, resolve the model version, make one call
here and render what comes back; everything between (seeds to latents, class labels, truncation, paths
through latent space, the batcher, the deadline, client disconnects) happens in this module. Image generators
(uint8 images) and sound generators (`app/audio`: float32 waveforms) share it: both draw from latents through a
`LatentServable`'s batcher, and only what they answer differs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np
from starlette.requests import Request

from app.api import defaults, params
from app.latent.latents import InterpolationMethod, interpolation_path, lerp, truncate
from app.latent.servable import latent_servable
from app.metrics import Metrics
from app.server import tracing
from app.server.disconnect import cancel_on_disconnect
from app.server.errors import InvalidParameter, Overloaded, ShuttingDown
from app.server.quotas import Quotas
from app.server.shutdown import admitted
from app.serving.registry import ModelRegistry, ModelVersion
from genserve import store
from genserve.conventions import latents_from_seeds
from genserve.store import ModelMetadata

# Up to this many seeds, drawing latents inline (a few microseconds each) beats a hand-off to a worker thread.
_INLINE_SEEDS = 16


@dataclass(frozen=True)
class LatentRequest:
    """What to draw: one output (image or clip) per seed or per explicit latent, a truncation psi and a class."""

    seeds: list[int] | None = None
    latents: np.ndarray | None = None
    truncation: float = defaults.TRUNCATION
    label: str | int | None = None


@dataclass(frozen=True)
class Generated:
    """A generator's outputs ``[N, ...]`` (uint8 images ``[N, H, W, C]``, float32 clips ``[N, samples]``), the
    (truncated) latents they came from, their seeds if any, the truncation applied and, for conditional models,
    each one's class."""

    model_version: ModelVersion
    outputs: np.ndarray
    latents: np.ndarray
    seeds: list[int] | None
    truncation: float = defaults.TRUNCATION
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class GeneratedImages(Generated):
    """An image generator's outputs: uint8 images ``[N, H, W, C]``."""

    @property
    def images(self) -> np.ndarray:
        return self.outputs


GeneratedT = TypeVar("GeneratedT", bound=Generated)


@dataclass(frozen=True)
class InterpolationRequest:
    """A walk through keyframes (seeds, or latents such as encoded uploads) with every frame's class."""

    steps: int
    method: InterpolationMethod
    loop: bool = False
    keyframe_seeds: list[int] | None = None
    keyframe_latents: np.ndarray | None = None
    truncation: float = defaults.TRUNCATION
    label: str | None = None
    start_label: str | None = None
    end_label: str | None = None


@dataclass(frozen=True)
class InterpolationPlan:
    """An interpolation checked against one model version: what the frames depend on, before drawing them."""

    model_version: ModelVersion
    request: InterpolationRequest
    labels: np.ndarray | None
    blend: tuple[int, int] | None

    def cache_key(self) -> dict[str, Any]:
        """Everything the frames depend on besides rendering options (for an ETag)."""
        request = self.request
        return {
            "model": self.model_version.name,
            "version": self.model_version.version,
            "seeds": request.keyframe_seeds,
            "steps": request.steps,
            "method": request.method,
            "loop": request.loop,
            "psi": request.truncation,
            "label": None if self.labels is None else int(self.labels[0]),
            "label_blend": list(self.blend) if self.blend else None,
        }

    def classes(self) -> tuple[int, ...] | None:
        """The class every frame shows, or the two classes a blend goes between; None for unconditional models."""
        if self.blend:
            return self.blend
        return None if self.labels is None else (int(self.labels[0]),)


@dataclass(frozen=True)
class Frames:
    """The frames of an interpolation (images, or a sound generator's clips) and each one's position on the
    keyframe path (0 … K-1); `classes` is the class every frame shows, or the two a blend goes between
    (conditional models)."""

    model_version: ModelVersion
    outputs: np.ndarray
    positions: np.ndarray
    seeds: list[int] | None
    method: str
    truncation: float = defaults.TRUNCATION
    loop: bool = False
    classes: tuple[int, ...] | None = None

    @property
    def images(self) -> np.ndarray:
        """The frames of an image generator."""
        return self.outputs


class GenerationService:
    """The one path from requests to generators' outputs; every route that draws from latents goes through it."""

    def __init__(
        self,
        request_timeout_s: float,
        metrics: Metrics,
        registry: ModelRegistry,
        quotas: Quotas | None = None,
    ) -> None:
        """`quotas` charges each request's images or clips to its client's key (none: no quotas)."""
        self.request_timeout_s = request_timeout_s
        self._metrics = metrics
        self._registry = registry
        self._quotas = quotas if quotas is not None else Quotas({})
        self._local = threading.local()

    async def images(
        self, model_version: ModelVersion, request: LatentRequest, *, http_request: Request | None = None
    ) -> GeneratedImages:
        """The images of `request`; dropped if `http_request`'s client leaves before they are ready."""
        return await self._generate(model_version, request, http_request, GeneratedImages)

    async def generate(
        self, model_version: ModelVersion, request: LatentRequest, *, http_request: Request | None = None
    ) -> Generated:
        """The outputs of `request`, whatever the generator makes (`images` for an image generator's)."""
        return await self._generate(model_version, request, http_request, Generated)

    async def _generate(
        self,
        model_version: ModelVersion,
        request: LatentRequest,
        http_request: Request | None,
        result: type[GeneratedT],
    ) -> GeneratedT:
        metadata = model_version.metadata
        if request.latents is not None:
            latents = params.check_latent_length(request.latents, metadata.latent_dim)
        else:
            latents = await self._latents_for_seeds(request.seeds or [], metadata.latent_dim)
        labels = params.labels_for(metadata, request.label, len(latents))
        latents = truncate(latents, request.truncation)
        outputs = await self._draw(model_version, latents, labels, request=http_request)
        return result(model_version, outputs, latents, request.seeds, request.truncation, labels)

    def plan_interpolation(
        self, model_version: ModelVersion, request: InterpolationRequest
    ) -> InterpolationPlan:
        """Check `request` against the model (classes, label blending) without drawing anything."""
        blend = _label_blend(model_version, request)
        # Every frame shows one class (or a smooth blend): a path that changed class each frame would only flicker.
        labels = (
            None
            if blend
            else params.labels_for(model_version.metadata, request.label, request.steps, cycle=False)
        )
        return InterpolationPlan(model_version, request, labels, blend)

    async def interpolate(self, plan: InterpolationPlan, *, http_request: Request | None = None) -> Frames:
        """Draw the frames of a checked interpolation."""
        request, model_version = plan.request, plan.model_version
        keyframes = request.keyframe_latents
        if keyframes is None:
            keyframes = await self._latents_for_seeds(
                request.keyframe_seeds or [], model_version.metadata.latent_dim
            )
        latents, positions = interpolation_path(keyframes, request.steps, request.method, loop=request.loop)
        embeddings = None
        if plan.blend:
            path_length = len(keyframes) - 1 + int(request.loop)
            embeddings = _blended_embeddings(model_version, plan.blend, positions / path_length)
        outputs = await self._draw(
            model_version,
            truncate(latents, request.truncation),
            plan.labels,
            label_embeddings=embeddings,
            request=http_request,
        )
        return Frames(
            model_version,
            outputs,
            positions,
            request.keyframe_seeds,
            request.method,
            request.truncation,
            request.loop,
            plan.classes(),
        )

    async def for_latents(
        self,
        model_version: ModelVersion,
        latents: np.ndarray,
        labels: np.ndarray | None,
        *,
        timeout_s: float | None = None,
        http_request: Request | None = None,
    ) -> Generated:
        """Outputs for float32 `latents` ``[N, D]`` and, for conditional models, int32 class `labels` ``[N]``.

        The tensors go to the model as given (no truncation, one class per row), as inference protocols send
        them; `timeout_s` shortens the request deadline when the caller has less time left.
        """
        metadata = model_version.metadata
        latents = params.check_latent_length(latents, metadata.latent_dim)
        _check_row_labels(metadata, labels, len(latents))
        outputs = await self._draw(model_version, latents, labels, request=http_request, timeout_s=timeout_s)
        return Generated(model_version, outputs, latents, None, labels=labels)

    async def encode(
        self, model_version: ModelVersion, images: np.ndarray, *, http_request: Request | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The posterior (mean, log-variance) of uint8 `images` ``[B, H, W, C]`` from a VAE's encoder.

        Encoding goes through the same batcher as generation, so concurrent uploads share model calls.
        """
        outputs = await self._submit(model_version, {store.IMAGES_INPUT: images}, http_request)
        return outputs[:, 0], outputs[:, 1]

    async def _latents_for_seeds(self, seeds: list[int], latent_dim: int) -> np.ndarray:
        if len(seeds) <= _INLINE_SEEDS:
            return latents_from_seeds(seeds, latent_dim, self._generator())
        return await anyio.to_thread.run_sync(
            lambda: latents_from_seeds(seeds, latent_dim, self._generator())
        )

    def _generator(self) -> np.random.RandomState:
        """This thread's own generator: re-seeding one is cheap, sharing one across threads is not safe."""
        generator: np.random.RandomState | None = getattr(self._local, "generator", None)
        if generator is None:
            generator = self._local.generator = np.random.RandomState()
        return generator

    async def _draw(
        self,
        model_version: ModelVersion,
        latents: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        label_embeddings: np.ndarray | None = None,
        request: Request | None = None,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Outputs for `latents`; conditional models take class `labels` or points in their label embedding."""
        inputs = {store.LATENT_INPUT: latents}
        if labels is not None:
            inputs[store.LABEL_INPUT] = labels
        if label_embeddings is not None:
            inputs[store.LABEL_EMBEDDING_INPUT] = label_embeddings
        return await self._submit(model_version, inputs, request, timeout_s)

    async def _submit(
        self,
        model_version: ModelVersion,
        inputs: dict[str, np.ndarray],
        request: Request | None,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        if self._registry.closing and not admitted(request):
            self._metrics.rejected(model_version.name, model_version.version, "shutdown")
            raise ShuttingDown()
        servable = latent_servable(model_version)
        seconds = self.request_timeout_s if timeout_s is None else min(timeout_s, self.request_timeout_s)
        deadline = time.monotonic() + seconds
        rows = len(next(iter(inputs.values())))
        tracing.annotate(model=model_version.name, version=model_version.version, n=rows)
        charge = self._quotas.charge(servable.quota_unit, rows)
        work = servable.batcher.submit(inputs, deadline=deadline)
        try:
            return await cancel_on_disconnect(request, work)
        except (Overloaded, ShuttingDown):
            if charge is not None:  # refused before it reached the model: nothing was made
                charge.refund()
            raise


def _check_row_labels(metadata: ModelMetadata, labels: np.ndarray | None, count: int) -> None:
    """One class index per image for a conditional model, none for the others."""
    if not metadata.conditional:
        if labels is not None:
            raise InvalidParameter("label", f"model {metadata.name!r} is not conditional and takes no label")
        return
    classes = metadata.class_names or []
    if labels is None:
        raise InvalidParameter("label", f"this model needs one class index (0..{len(classes) - 1}) per image")
    if labels.shape != (count,):
        raise InvalidParameter(
            "label", f"must hold one class index per image ({count}), got shape {labels.shape}"
        )
    outside = labels[(labels < 0) | (labels >= len(classes))]
    if outside.size:
        raise InvalidParameter(
            "label", f"class indices must lie in 0..{len(classes) - 1} ({classes}), got {int(outside[0])}"
        )


def _label_blend(model_version: ModelVersion, request: InterpolationRequest) -> tuple[int, int] | None:
    """(start class, end class) when the request blends classes; None when it does not."""
    start_label, end_label = request.start_label, request.end_label
    if start_label is None and end_label is None:
        return None
    if request.label is not None:
        raise InvalidParameter("label", "give either label or start_label/end_label, not both")
    if start_label is None or end_label is None:
        missing = "start_label" if start_label is None else "end_label"
        raise InvalidParameter(missing, "give both start_label and end_label to blend two classes")
    metadata = model_version.metadata
    start = params.label_index(metadata, "start_label", start_label)
    end = params.label_index(metadata, "end_label", end_label)
    if latent_servable(model_version).label_embeddings is None:
        raise InvalidParameter(
            "start_label",
            f"model {model_version.name!r} version {model_version.version} cannot blend classes (it was "
            "exported without label embedding signatures): use label",
        )
    return start, end


def _blended_embeddings(
    model_version: ModelVersion, blend: tuple[int, int], fractions: np.ndarray
) -> np.ndarray:
    """Each frame's label embedding, moving in a straight line from the start class's to the end class's."""
    table = latent_servable(model_version).label_embeddings
    if table is None:  # checked by _label_blend; the version cannot change between the two calls
        raise InvalidParameter("start_label", "this model cannot blend classes")
    return lerp(table[blend[0]], table[blend[1]], fractions).astype(np.float32)
