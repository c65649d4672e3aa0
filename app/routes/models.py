"""GET /models and /models/{name}: what is loaded, its status, shape and evaluation numbers."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter

from app import params
from app.deps import RegistryDep
from app.registry import ModelEntry, ModelRegistry, ModelVersion
from app.schemas import ErrorResponse, ModelInfo, ModelList, VersionInfo

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(registry: RegistryDep) -> ModelList:
    """Every model in the store with its versions and their status."""
    return ModelList(
        default_model=registry.default_model,
        device=registry.device.name,
        models=[model_info(registry, entry) for entry in registry.entries],
    )


@router.get("/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
async def get_model(name: str, registry: RegistryDep) -> ModelInfo:
    """One model with its versions and their status."""
    return model_info(registry, registry.get_entry(params.parse_model_name(name)))


def model_info(registry: ModelRegistry, entry: ModelEntry) -> ModelInfo:
    latest = entry.latest_available()
    return ModelInfo(
        name=entry.name,
        default=entry.name == registry.default_model,
        latest_available=latest.version if latest else None,
        versions=[
            _version_info(registry, v) for v in sorted(entry.versions.values(), key=lambda v: v.version)
        ],
    )


def _version_info(registry: ModelRegistry, model_version: ModelVersion) -> VersionInfo:
    info = VersionInfo(
        version=model_version.version, status=model_version.status.value, error=model_version.error
    )
    if model_version.text_runtime is not None:
        return _text_version_info(registry, model_version, info)
    runtime = model_version.runtime
    if runtime is None:
        return info
    metadata = runtime.metadata
    evaluation = runtime.evaluation
    info.kind = metadata.kind
    info.latent_dim = metadata.latent_dim
    info.latent_scale = metadata.latent_scale
    info.image_shape = list(metadata.image_shape)
    info.classes = metadata.class_names
    info.dataset = metadata.dataset
    info.created = metadata.created
    info.device = registry.device.name
    info.evaluation = evaluation.model_dump(mode="json") if evaluation else None
    info.capabilities = _capabilities(model_version)
    if model_version.batcher is not None:
        info.batching = dataclasses.asdict(model_version.batcher.stats)
    return info


def _text_version_info(
    registry: ModelRegistry, model_version: ModelVersion, info: VersionInfo
) -> VersionInfo:
    runtime, batcher = model_version.text_runtime, model_version.text_batcher
    if runtime is None:
        return info
    evaluation = runtime.evaluation
    info.kind = runtime.metadata.kind
    info.dataset = runtime.metadata.dataset
    info.created = runtime.metadata.created
    info.device = registry.device.name
    info.vocabulary_size = runtime.vocabulary_size
    info.evaluation = evaluation.model_dump(mode="json") if evaluation else None
    info.capabilities = ["generate_text", "stream"]
    if batcher is not None:
        info.batching = dataclasses.asdict(batcher.stats)
    return info


def _capabilities(model_version: ModelVersion) -> list[str]:
    runtime = model_version.runtime
    found = ["generate", "interpolate"]
    if runtime is None:
        return found
    if runtime.metadata.conditional:
        found.append("labels")
    if runtime.label_embeddings is not None:
        found.append("label_blend")
    if runtime.can_encode:
        found.append("encode")
    return found
