"""GET /models and /models/{name}: what is loaded, its status, shape and evaluation numbers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import params
from app.api.deps import RegistryDep
from app.api.schemas import ErrorResponse, ModelInfo, ModelList, VersionInfo
from app.serving.registry import ModelEntry, ModelRegistry, ModelVersion

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
        versions=[_version_info(v) for v in sorted(entry.versions.values(), key=lambda v: v.version)],
    )


def _version_info(model_version: ModelVersion) -> VersionInfo:
    info = VersionInfo(
        version=model_version.version, status=model_version.status.value, error=model_version.error
    )
    if model_version.servable is not None:
        model_version.servable.describe(info)
    return info
