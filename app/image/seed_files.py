"""One seed's image as a file at an address that never changes, and the rendered files kept for repeats.

`GET /models/{name}/versions/{version}/images/{seed}.png` names exactly one image (a numbered version never
changes), so browsers and CDNs may keep it for good. `SeedFiles` checks what such a URL names against the model,
then answers from `file_cache` (rendered bytes, least recently used dropped first past
`GENSERVE_IMAGE_CACHE_BYTES`) or draws the image through the `GenerationService`, and so the version's batcher,
like any `POST /generate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from app.api import defaults, params
from app.image.rendering import ImageFileView
from app.latent.generation import GenerationService, LatentRequest
from app.latent.rendering import Renderer
from app.metrics import Metrics
from app.serving.registry import ModelVersion
from app.serving.sized_cache import SizedCache

FileKey = tuple[str, int, int, float, int | None, str]


@dataclass(frozen=True)
class SeedFile:
    """One image a URL names: a version's drawing of `seed` at `truncation`, of class `label` (conditional models,
    as an index), as a `format` file."""

    model_version: ModelVersion
    seed: int
    truncation: float
    label: int | None
    format: str

    @property
    def key(self) -> FileKey:
        model_version = self.model_version
        return (
            model_version.name,
            model_version.version,
            self.seed,
            self.truncation,
            self.label,
            self.format,
        )

    def cache_key(self) -> dict[str, Any]:
        """Everything the file's bytes depend on besides rendering options (for an ETag)."""
        name, version, seed, truncation, label, format = self.key
        return {
            "model": name,
            "version": version,
            "seed": seed,
            "psi": truncation,
            "label": label,
            "format": format,
        }

    @property
    def class_name(self) -> str | None:
        if self.label is None:
            return None
        return (self.model_version.metadata.class_names or [])[self.label]

    def query(self) -> dict[str, str]:
        """The query fields of the file's URL: the truncation unless it is the default, the class by name."""
        query = {}
        if self.truncation != defaults.TRUNCATION:
            query["truncation"] = repr(self.truncation)
        if self.class_name is not None:
            query["label"] = self.class_name
        return query


def file_cache(max_bytes: int) -> SizedCache[FileKey, bytes]:
    """Rendered files by key, within `max_bytes`."""
    return SizedCache(max_bytes, len)


class SeedFiles:
    """Image files of single seeds: checked against the model, answered from the cache or drawn and rendered.

    Used from the event loop only, so the cache needs no lock.
    """

    def __init__(
        self, generation: GenerationService, renderer: Renderer, metrics: Metrics, max_cache_bytes: int
    ) -> None:
        self._generation = generation
        self._renderer = renderer
        self._metrics = metrics
        self._cache = file_cache(max_cache_bytes)
        metrics.track_image_cache(lambda: self._cache.size_bytes)

    def plan(
        self, model_version: ModelVersion, seed: int, truncation: float, label: str | None, format: str
    ) -> SeedFile:
        """The file of `seed` (checked already), with its class checked against the model and made an index: a
        conditional model's image without a label is class 0's, and has the same key as with it."""
        labels = params.labels_for(model_version.metadata, label, 1)
        index = None if labels is None else int(labels[0])
        return SeedFile(model_version, seed, truncation, index, format)

    async def body(self, file: SeedFile, *, http_request: Request | None = None) -> bytes:
        """The file's bytes: from the cache, else drawn through the version's batcher, rendered and kept."""
        model_version = file.model_version
        if self._cache.enabled:
            cached = self._cache.get(file.key)
            self._metrics.image_cache_lookup(
                model_version.name, model_version.version, hit=cached is not None
            )
            if cached is not None:
                return cached
        request = LatentRequest(seeds=[file.seed], truncation=file.truncation, label=file.class_name)
        result = await self._generation.images(model_version, request, http_request=http_request)
        body = await self._renderer.body(ImageFileView(result), file.format)
        if not isinstance(body, bytes):
            raise TypeError(f"an image file rendered as {type(body).__name__}, not bytes")
        if self._cache.enabled:
            self._cache.put(file.key, body)
        return body
