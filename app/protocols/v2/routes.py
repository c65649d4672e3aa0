"""Open Inference Protocol v2 (KServe, Triton) over REST: health, model metadata and readiness, and `infer`.

The wire format is parsed and written by `app.protocols.v2.codec`; inference goes through the same batchers as
`/generate`, for image, text and sound generators alike.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Depends, Path, Request
from fastapi.responses import JSONResponse, Response

from app.api import params
from app.api.deps import InferenceDep, RegistryDep
from app.api.openapi import ModelPath
from app.protocols.errors import plain_error, protocol_router
from app.protocols.inference import Inference, select_outputs
from app.protocols.v2 import codec as v2
from app.server.errors import LOADING_RETRY_AFTER_S, ShuttingDown, retry_after
from app.serving.registry import ModelRegistry, ModelVersion

router = protocol_router("/v2", "open inference protocol v2")

VersionPath = Annotated[str, Path(description="Version number or label.")]


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return {"name": request.app.title, "version": request.app.version, "extensions": [v2.BINARY_EXTENSION]}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """The process is up and answering."""
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "Not ready to serve the default model."}})
async def ready(registry: RegistryDep) -> JSONResponse:
    """200 once the default model is loaded and warmed up; 503 before, and while shutting down."""
    if registry.is_ready():
        return JSONResponse({"ready": True})
    reason = "the service is shutting down" if registry.closing else "the default model is not ready yet"
    return plain_error(503, reason, retry_after(LOADING_RETRY_AFTER_S))


def _newest(name: ModelPath, inference: InferenceDep) -> ModelVersion:
    return inference.resolve(name, None)


def _chosen(name: ModelPath, version: VersionPath, inference: InferenceDep) -> ModelVersion:
    return inference.resolve(name, params.parse_version(version))


# The version a path names: 404 when the model or version is unknown, 503 while it cannot serve.
NewestVersion = Annotated[ModelVersion, Depends(_newest)]
ChosenVersion = Annotated[ModelVersion, Depends(_chosen)]


@router.get("/models/{name}")
async def model_metadata(model_version: NewestVersion, registry: RegistryDep) -> dict[str, Any]:
    """The newest available version's inputs and outputs: names, datatypes and shapes (-1: any size)."""
    return v2.model_metadata(registry, model_version)


@router.get("/models/{name}/versions/{version}")
async def version_metadata(model_version: ChosenVersion, registry: RegistryDep) -> dict[str, Any]:
    """One version's inputs and outputs."""
    return v2.model_metadata(registry, model_version)


@router.get("/models/{name}/ready")
async def model_ready(model_version: NewestVersion, registry: RegistryDep) -> JSONResponse:
    """200 when a version of the model can serve; 503 (with Retry-After) while none can."""
    return _readiness(registry, model_version)


@router.get("/models/{name}/versions/{version}/ready")
async def version_ready(model_version: ChosenVersion, registry: RegistryDep) -> JSONResponse:
    """200 when this version can serve."""
    return _readiness(registry, model_version)


@router.post("/models/{name}/infer")
async def model_infer(model_version: NewestVersion, request: Request, inference: InferenceDep) -> Response:
    """Images (UINT8) or sound generators' `audio` (FP32 [-1, samples]) from latents `z` (FP32 [-1, latent_dim])
    and, for conditional models, class indices `label`; text from `prompt` (BYTES [-1]) and optional
    `max_new_tokens`, `temperature`, `seed`."""
    return await _infer(request, model_version, inference)


@router.post("/models/{name}/versions/{version}/infer")
async def version_infer(model_version: ChosenVersion, request: Request, inference: InferenceDep) -> Response:
    """The same as `infer`, for one version."""
    return await _infer(request, model_version, inference)


def _readiness(registry: ModelRegistry, model_version: ModelVersion) -> JSONResponse:
    if registry.closing:
        raise ShuttingDown()
    return JSONResponse({"name": model_version.name, "ready": True})


async def _infer(
    request: Request,
    model_version: ModelVersion,
    inference: Inference,
) -> Response:
    header_length = request.headers.get(v2.HEADER_LENGTH)
    parsed = await inference.parse(
        lambda body: v2.parse_infer_request(body, header_length), await request.body()
    )
    outputs = await inference.infer(model_version, parsed.tensors, http_request=request)
    chosen = select_outputs(outputs, parsed.outputs, "outputs")
    header: dict[str, Any] = {"model_name": model_version.name, "model_version": str(model_version.version)}
    if parsed.id is not None:
        header["id"] = parsed.id
    binary = set(chosen) if parsed.all_binary else parsed.binary_outputs
    return await anyio.to_thread.run_sync(v2.infer_response, header, chosen, binary)
