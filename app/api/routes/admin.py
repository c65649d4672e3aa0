"""Admin API (only when GENSERVE_ADMIN_TOKEN is set): reload a model, unload a version."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header

from app.api import params
from app.api.deps import RegistryDep, SettingsDep, WatcherDep
from app.api.routes.models import model_info
from app.api.schemas import ErrorResponse, ModelInfo
from app.server.errors import Forbidden, NotFound, Unauthorized


def require_admin(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer-token check in constant time; without a configured token the admin API does not exist."""
    if settings.admin_token is None:
        raise NotFound("Not Found")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <token>'")
    expected = settings.admin_token.get_secret_value().encode()
    if not hmac.compare_digest(token.strip().encode(), expected):
        raise Forbidden("wrong admin token")


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={code: {"model": ErrorResponse} for code in (401, 403, 404)},
)


@router.post("/models/{name}/reload", response_model=ModelInfo)
async def reload_model(name: str, watcher: WatcherDep, registry: RegistryDep) -> ModelInfo:
    """Rescan one model now: load new versions, retry failed ones, lift earlier unloads."""
    entry = await watcher.reload(params.parse_model_name(name))
    return model_info(registry, entry)


@router.post("/models/{name}/versions/{version}/unload", response_model=ModelInfo)
async def unload_version(name: str, version: int, watcher: WatcherDep, registry: RegistryDep) -> ModelInfo:
    """Stop serving one version (after its queued work) until the model is reloaded."""
    checked = params.parse_model_name(name)
    await watcher.unload(checked, version)
    return model_info(registry, registry.get_entry(checked))
