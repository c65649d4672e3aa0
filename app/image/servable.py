"""An image generator version as a servable: a `ImageRuntime` behind its own batcher.

`image_servable` is how the image pipeline (generation, interpolation, VAE uploads) reaches a version's runtime
and batcher; what it answers to `POST /generate` and the inference protocols is its kind's (`app/image/kind.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.api.schemas import VersionInfo
from app.image.batching import Batcher
from app.image.runtime import ImageRuntime
from app.server.errors import InvalidParameter
from app.serving.registry import ENCODE, GENERATE, INTERPOLATE, ModelVersion
from app.serving.servable import BatchedServable
from genserve.signatures import Signature, image_signature

if TYPE_CHECKING:
    from app.image.kind import ImageKind


class ImageServable(BatchedServable[ImageRuntime, Batcher]):
    """One image generator version: its runtime, and its batcher once started."""

    usage = "generates images"

    def __init__(self, runtime: ImageRuntime, kind: ImageKind) -> None:
        super().__init__(runtime, kind)
        self.kind = kind
        # Fixed once loaded: worked out here, not on every request that checks them.
        self.signature: Signature = image_signature(self.metadata)
        self.capabilities = _capabilities(runtime)

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


def _capabilities(runtime: ImageRuntime) -> list[str]:
    found = [GENERATE, INTERPOLATE]
    if runtime.metadata.conditional:
        found.append("labels")
    if runtime.label_embeddings is not None:
        found.append("label_blend")
    if runtime.can_encode:
        found.append(ENCODE)
    return found


def image_servable(model_version: ModelVersion) -> ImageServable:
    """The version's image generator; a 503 while it is not loaded, a 422 when it makes something else."""
    servable = model_version.serving
    if not isinstance(servable, ImageServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable
