"""Providers that hand routes the state built in the lifespan: `XDep` is the `app.state` attribute it names."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from app.config import Settings
from app.image.seed_files import SeedFiles
from app.image.uploads import UploadReader
from app.latent.generation import GenerationService
from app.latent.rendering import Renderer
from app.metrics import Metrics
from app.protocols.inference import Inference
from app.protocols.openai.serving import Completions
from app.serving.registry import ModelRegistry
from app.serving.store_watcher import StoreWatcher


def _state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A provider of `app.state.<name>` (set in the lifespan)."""

    async def provide(request: Request) -> Any:
        return getattr(request.app.state, name)

    provide.__name__ = f"get_{name}"
    return provide


SettingsDep = Annotated[Settings, Depends(_state("settings"))]
RegistryDep = Annotated[ModelRegistry, Depends(_state("registry"))]
GenerationDep = Annotated[GenerationService, Depends(_state("generation"))]
RendererDep = Annotated[Renderer, Depends(_state("renderer"))]
SeedFilesDep = Annotated[SeedFiles, Depends(_state("seed_files"))]
InferenceDep = Annotated[Inference, Depends(_state("inference"))]
CompletionsDep = Annotated[Completions, Depends(_state("completions"))]
UploadReaderDep = Annotated[UploadReader, Depends(_state("upload_reader"))]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]
WatcherDep = Annotated[StoreWatcher, Depends(_state("watcher"))]
