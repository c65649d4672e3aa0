"""Providers that hand routes the state built in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.image.generation import GenerationService
from app.image.rendering import Renderer
from app.image.uploads import UploadReader
from app.metrics import Metrics
from app.protocols.inference import Inference
from app.serving.registry import ModelRegistry
from app.serving.store_watcher import StoreWatcher


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


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
RendererDep = Annotated[Renderer, Depends(get_renderer)]
InferenceDep = Annotated[Inference, Depends(get_inference)]
UploadReaderDep = Annotated[UploadReader, Depends(get_upload_reader)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
WatcherDep = Annotated[StoreWatcher, Depends(get_watcher)]
