"""Generation through a model version's batcher, with the request deadline applied."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio
import numpy as np
from starlette.requests import Request

from app.disconnect import cancel_on_disconnect
from app.errors import ModelNotReady, ShuttingDown
from app.latents import latents_from_seeds
from app.metrics import Metrics
from app.registry import ModelRegistry, ModelVersion
from genserve import store

_INLINE_SEEDS = 16
P = ParamSpec("P")
T = TypeVar("T")


class GenerationService:
    """The one path from latents to uint8 images; every route generates through it."""

    def __init__(self, request_timeout_s: float, metrics: Metrics, registry: ModelRegistry) -> None:
        self.request_timeout_s = request_timeout_s
        self._metrics = metrics
        self._registry = registry
        self._local = threading.local()

    async def latents_for_seeds(self, seeds: list[int], latent_dim: int) -> np.ndarray:
        if len(seeds) <= _INLINE_SEEDS:
            # A few microseconds per seed: cheaper than a hand-off to a worker thread.
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

    async def generate(
        self,
        model_version: ModelVersion,
        latents: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        label_embeddings: np.ndarray | None = None,
        request: Request | None = None,
    ) -> np.ndarray:
        """Images for `latents` through the version's batcher; dropped if `request`'s client leaves.

        Conditional models take either class `labels` or points in their label embedding space.
        """
        inputs = {store.LATENT_INPUT: latents}
        if labels is not None:
            inputs[store.LABEL_INPUT] = labels
        if label_embeddings is not None:
            inputs[store.LABEL_EMBEDDING_INPUT] = label_embeddings
        return await self._submit(model_version, inputs, request)

    async def _submit(
        self, model_version: ModelVersion, inputs: dict[str, np.ndarray], request: Request | None
    ) -> np.ndarray:
        if self._registry.closing:
            self._metrics.rejected(model_version.name, model_version.version, "shutdown")
            raise ShuttingDown()
        if model_version.batcher is None:
            raise ModelNotReady(f"model {model_version.name!r} version {model_version.version} is not loaded")
        deadline = time.monotonic() + self.request_timeout_s
        work = model_version.batcher.submit(inputs, deadline=deadline)
        return await cancel_on_disconnect(request, work)

    async def latents_for_images(
        self, model_version: ModelVersion, images: np.ndarray, *, request: Request | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The posterior (mean, log-variance) of uint8 `images` ``[B, H, W, C]`` from a VAE's encoder.

        Encoding goes through the same batcher as generation, so concurrent uploads share model calls.
        """
        outputs = await self._submit(model_version, {store.IMAGES_INPUT: images}, request)
        return outputs[:, 0], outputs[:, 1]

    async def encode(
        self,
        model_version: ModelVersion,
        image_format: str,
        encoder: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run a blocking encoder on a worker thread and time it."""

        def timed() -> T:
            started = time.perf_counter()
            result = encoder(*args, **kwargs)
            elapsed = time.perf_counter() - started
            self._metrics.observe_encode(model_version.name, model_version.version, image_format, elapsed)
            return result

        return await anyio.to_thread.run_sync(timed)
