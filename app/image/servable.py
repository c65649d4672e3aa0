"""An image generator version as a servable: `ImageServable`, an `ImageRuntime` behind the batcher every
generator that draws from latents shares (`app/latent/servable.py`).

`image_servable` is how the image-only parts (VAE uploads, label blends) reach an image generator's runtime; what
a version answers to `POST /generate` and the inference protocols is its kind's (`app/image/kind.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.api.schemas import VersionInfo
from app.image.runtime import ImageRuntime
from app.latent.servable import LatentServable
from app.server.errors import InvalidParameter
from app.server.quotas import IMAGES
from app.serving.registry import ENCODE, GENERATE, INTERPOLATE, ModelVersion
from genserve.signatures import Signature, image_signature

if TYPE_CHECKING:
    from app.image.kind import ImageKind

# What `POST /generate` answers for an image generator, the default first.
IMAGE_FORMATS = ["png", "json", "npy", "zip"]


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


def image_servable(model_version: ModelVersion) -> ImageServable:
    """The version's image generator; a 503 while it is not loaded, a 422 when it makes something else."""
    servable = model_version.serving
    if not isinstance(servable, ImageServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable
