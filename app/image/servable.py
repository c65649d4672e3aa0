"""Generators that draw from latents as servables: `LatentServable`, what image and sound generators share (the
adaptive batcher, the quota unit they are charged in), and `ImageServable`, an `ImageRuntime` behind it.

`latent_servable` is how the generation pipeline (generation, interpolation) reaches a version's batcher, and
`image_servable` how the image-only parts (VAE uploads, label blends) reach an image generator's runtime; what a
version answers to `POST /generate` and the inference protocols is its kind's (`app/image/kind.py`,
`app/audio/kind.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from app.api.schemas import VersionInfo
from app.image.batching import Batcher
from app.image.runtime import ImageRuntime
from app.server.errors import InvalidParameter
from app.server.quotas import IMAGES
from app.serving.registry import ENCODE, GENERATE, INTERPOLATE, ModelVersion
from app.serving.servable import BatchedServable, LoadedRuntime, ModelKind
from genserve.signatures import Signature, image_signature

if TYPE_CHECKING:
    from app.image.generation import Frames
    from app.image.kind import ImageKind
    from app.image.rendering import View

LatentRuntimeT = TypeVar("LatentRuntimeT", bound=LoadedRuntime)
# What `POST /generate` answers for an image generator, the default first.
IMAGE_FORMATS = ["png", "json", "npy", "zip"]


class FramesRendering(Protocol):
    """How a kind answers an interpolation in one format, checked before any frame is drawn."""

    @property
    def format(self) -> str: ...

    def view(self, frames: Frames) -> View: ...


class InterpolatingKind(ModelKind, Protocol):
    """What the interpolation route asks of a latent generator's kind."""

    def frames_rendering(
        self, format: str | None, *, steps: int, fps: int, cols: int | None
    ) -> FramesRendering:
        """The rendering of frames in `format` (None: the kind's default); a 422 naming the field it cannot use."""
        ...


class LatentServable(BatchedServable[LatentRuntimeT, Batcher]):
    """A version whose outputs are drawn from latents (and classes) through the adaptive batcher."""

    # The quota unit its outputs are charged in (`app.server.quotas`).
    quota_unit: str
    kind: InterpolatingKind

    @property
    def label_embeddings(self) -> np.ndarray | None:
        """The class embedding table that label blends walk through; None when the version has none."""
        return None


class ImageServable(LatentServable[ImageRuntime]):
    """One image generator version: its runtime, and its batcher once started."""

    usage = "generates images"
    quota_unit = IMAGES
    kind: ImageKind

    def __init__(self, runtime: ImageRuntime, kind: ImageKind) -> None:
        super().__init__(runtime, kind)
        self.kind = kind
        # Fixed once loaded: worked out here, not on every request that checks them.
        self.signature: Signature = image_signature(self.metadata)
        self.capabilities = _capabilities(runtime)

    @property
    def label_embeddings(self) -> np.ndarray | None:
        return self.runtime.label_embeddings

    async def start(self, name: str, version: int) -> None:
        await super().start(name, version)
        self.kind.tune_calls(self.runtime, name, version)

    async def stop(self, *, drain: bool, timeout_s: float = 30.0) -> None:
        self.runtime.stop_tuning()
        await super().stop(drain=drain, timeout_s=timeout_s)

    def _describe(self, info: VersionInfo) -> None:
        metadata = self.metadata
        if self.runtime.calls is not None:
            info.model_calls = self.runtime.calls.describe()
        info.latent_dim = metadata.latent_dim
        info.latent_scale = metadata.latent_scale
        info.image_shape = list(metadata.image_shape)
        info.classes = metadata.class_names
        info.formats = list(IMAGE_FORMATS)


def _capabilities(runtime: ImageRuntime) -> list[str]:
    found = [GENERATE, INTERPOLATE]
    if runtime.metadata.conditional:
        found.append("labels")
    if runtime.label_embeddings is not None:
        found.append("label_blend")
    if runtime.can_encode:
        found.append(ENCODE)
    return found


def latent_servable(model_version: ModelVersion) -> LatentServable[LoadedRuntime]:
    """The version's generator drawing from latents; a 503 while it is not loaded, a 422 when it makes something
    else."""
    servable = model_version.serving
    if not isinstance(servable, LatentServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable


def image_servable(model_version: ModelVersion) -> ImageServable:
    """The version's image generator; a 503 while it is not loaded, a 422 when it makes something else."""
    servable = model_version.serving
    if not isinstance(servable, ImageServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable
