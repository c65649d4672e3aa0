"""An image generator version as a servable: a `ImageRuntime` behind its own batcher.

`image_servable` is how the image pipeline (generation, interpolation, VAE uploads) reaches a version's runtime
and batcher; what it answers to `POST /generate` and the inference protocols is its kind's (`app/image/kind.py`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from app.api.schemas import VersionInfo
from app.image.batching import Batcher
from app.image.runtime import ImageRuntime
from app.server.errors import InvalidParameter
from app.serving.registry import ENCODE, GENERATE, INTERPOLATE, ModelVersion
from app.serving.servable import BatcherSlot
from genserve.signatures import Signature, image_signature

if TYPE_CHECKING:
    from app.image.kind import ImageKind


class ImageServable:
    """One image generator version: its runtime, and its batcher once started."""

    usage = "generates images"

    def __init__(self, runtime: ImageRuntime, kind: ImageKind) -> None:
        self.runtime = runtime
        self.metadata = runtime.metadata
        self.device = runtime.device
        self._kind = kind
        self._slot: BatcherSlot[Batcher] = BatcherSlot(self.metadata.name)

    @property
    def kind(self) -> ImageKind:
        return self._kind

    @property
    def batcher(self) -> Batcher:
        return self._slot.get()

    @property
    def signature(self) -> Signature:
        return image_signature(self.metadata)

    @property
    def capabilities(self) -> list[str]:
        found = [GENERATE, INTERPOLATE]
        if self.metadata.conditional:
            found.append("labels")
        if self.runtime.label_embeddings is not None:
            found.append("label_blend")
        if self.runtime.can_encode:
            found.append(ENCODE)
        return found

    async def start(self, name: str, version: int) -> None:
        await self._slot.start(self._kind.batcher(name, version, self.runtime))

    async def stop(self, *, drain: bool, timeout_s: float = 30.0) -> None:
        await self._slot.stop(drain=drain, timeout_s=timeout_s)

    def pending(self) -> int:
        batcher = self._slot.started
        if batcher is None:
            return 0
        return batcher.queued_images + batcher.in_flight_images

    def pending_description(self) -> str:
        batcher = self.batcher
        return f"{batcher.queued_images} queued and {batcher.in_flight_images} in-flight images"

    def describe(self, info: VersionInfo) -> None:
        metadata, evaluation = self.metadata, self.runtime.evaluation
        info.kind = metadata.kind
        info.latent_dim = metadata.latent_dim
        info.latent_scale = metadata.latent_scale
        info.image_shape = list(metadata.image_shape)
        info.classes = metadata.class_names
        info.dataset = metadata.dataset
        info.created = metadata.created
        info.device = self.device.name
        info.evaluation = evaluation.model_dump(mode="json") if evaluation else None
        info.capabilities = self.capabilities
        batcher = self._slot.started
        if batcher is not None:
            info.batching = dataclasses.asdict(batcher.stats)


def image_servable(model_version: ModelVersion) -> ImageServable:
    """The version's image generator; a 503 while it is not loaded, a 422 when it makes something else."""
    servable = model_version.serving
    if not isinstance(servable, ImageServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable
