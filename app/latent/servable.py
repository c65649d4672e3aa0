"""Generators that draw from latents as servables: `LatentServable`, what image and sound generators share (the
adaptive batcher, the quota unit they are charged in, the kind's interpolation formats).

`latent_servable` is how the generation pipeline (generation, interpolation) reaches a version's batcher; what a
version answers to `POST /generate` and the inference protocols is its kind's (`app/image/kind.py`,
`app/audio/kind.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from app.latent.batching import Batcher
from app.server.errors import InvalidParameter
from app.serving.registry import ModelVersion
from app.serving.servable import BatchedServable, LoadedRuntime, ModelKind

if TYPE_CHECKING:
    from app.latent.generation import Frames
    from app.latent.rendering import View

LatentRuntimeT = TypeVar("LatentRuntimeT", bound=LoadedRuntime)


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


def latent_servable(model_version: ModelVersion) -> LatentServable[LoadedRuntime]:
    """The version's generator drawing from latents; a 503 while it is not loaded, a 422 when it makes something
    else."""
    servable = model_version.serving
    if not isinstance(servable, LatentServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable
