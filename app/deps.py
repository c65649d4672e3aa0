"""Providers that hand routes the state built in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.generation import GenerationService
from app.metrics import Metrics
from app.protocols.tensors import Inference
from app.registry import ModelRegistry
from app.rendering import Renderer
from app.store_watcher import StoreWatcher
from app.text_generation import TextGenerationService
from app.uploads import UploadReader


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_generation(request: Request) -> GenerationService:
    service: GenerationService = request.app.state.generation
    return service


async def get_renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


async def get_text_generation(request: Request) -> TextGenerationService:
    service: TextGenerationService = request.app.state.text_generation
    return service


async def get_inference(request: Request) -> Inference:
    inference: Inference = request.app.state.inference
    return inference


async def get_upload_reader(request: Request) -> UploadReader:
    reader: UploadReader = request.app.state.upload_reader
    return reader


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_watcher(request: Request) -> StoreWatcher:
    watcher: StoreWatcher = request.app.state.watcher
    return watcher


@dataclass(frozen=True)
class GenerateServices:
    """What `POST /generate` works with, handed over as one dependency: FastAPI solves every dependency of a
    route on every request, and this is the busiest route."""

    settings: Settings
    registry: ModelRegistry
    generation: GenerationService
    renderer: Renderer
    text_generation: TextGenerationService


async def get_generate_services(request: Request) -> GenerateServices:
    state = request.app.state
    return GenerateServices(
        state.settings, state.registry, state.generation, state.renderer, state.text_generation
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
RendererDep = Annotated[Renderer, Depends(get_renderer)]
TextGenerationDep = Annotated[TextGenerationService, Depends(get_text_generation)]
InferenceDep = Annotated[Inference, Depends(get_inference)]
UploadReaderDep = Annotated[UploadReader, Depends(get_upload_reader)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
WatcherDep = Annotated[StoreWatcher, Depends(get_watcher)]
GenerateServicesDep = Annotated[GenerateServices, Depends(get_generate_services)]
