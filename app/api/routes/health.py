"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import RegistryDep
from app.server.errors import LOADING_RETRY_AFTER_S, retry_after
from app.serving.registry import ModelRegistry

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and answering."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready to serve the default model."}})
async def readyz(registry: RegistryDep) -> JSONResponse:
    """200 once the default model is loaded and warmed up; 503 before, and while shutting down."""
    if registry.is_ready():
        return JSONResponse({"status": "ready", "default_model": registry.default_model})
    return JSONResponse(
        {"error": {"code": "not_ready", "message": _reason(registry)}},
        status_code=503,
        headers=retry_after(LOADING_RETRY_AFTER_S),
    )


def _reason(registry: ModelRegistry) -> str:
    if registry.closing:
        return "the service is shutting down"
    if not registry.scanned:
        return "models are still being discovered"
    if registry.default_model is None:
        return f"no models found in {registry.store_path.name!r}"
    return f"default model {registry.default_model!r} is not loaded yet"
