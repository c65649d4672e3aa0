"""TensorFlow Serving's REST API: model status, metadata and `:predict` (row and columnar formats).

`/v1/models/{name}[/versions/{version}|/labels/{label}]` with `/metadata` or `:predict`, answering the JSON
that TensorFlow Serving answers, so its clients and tooling work unchanged. Prediction goes through the same
batchers as `/generate`, for image and text generators alike.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Path, Request
from fastapi.responses import Response

from app.api import params
from app.api.deps import InferenceDep, RegistryDep
from app.api.openapi import ModelPath
from app.protocols.errors import protocol_router
from app.protocols.inference import Inference
from app.protocols.tfserving import rest
from app.protocols.tfserving import status as tfserving
from app.serving.registry import ModelRegistry, ModelVersion

router = protocol_router("/v1/models", "tensorflow serving")

VersionPath = Annotated[str, Path(description="Version number.")]
LabelPath = Annotated[str, Path(description="Version label, from the model's labels.json.")]


@router.get("/{name}")
async def model_status(name: ModelPath, registry: RegistryDep) -> dict[str, Any]:
    """The state of every version of the model (GetModelStatusResponse)."""
    return tfserving.model_status(registry, name, None)


@router.get("/{name}/versions/{version}")
async def version_status(name: ModelPath, version: VersionPath, registry: RegistryDep) -> dict[str, Any]:
    """The state of one version."""
    return tfserving.model_status(registry, name, tfserving.parse_version_number(version))


@router.get("/{name}/labels/{label}")
async def label_status(name: ModelPath, label: LabelPath, registry: RegistryDep) -> dict[str, Any]:
    """The state of the version a label points to."""
    return tfserving.model_status(registry, name, tfserving.version_selector(None, label))


@router.get("/{name}/metadata")
async def model_metadata(name: ModelPath, registry: RegistryDep) -> dict[str, Any]:
    """The newest available version's signature (GetModelMetadataResponse)."""
    return tfserving.model_metadata(_resolve(registry, name, None))


@router.get("/{name}/versions/{version}/metadata")
async def version_metadata(name: ModelPath, version: VersionPath, registry: RegistryDep) -> dict[str, Any]:
    """One version's signature."""
    return tfserving.model_metadata(_resolve(registry, name, tfserving.parse_version_number(version)))


@router.get("/{name}/labels/{label}/metadata")
async def label_metadata(name: ModelPath, label: LabelPath, registry: RegistryDep) -> dict[str, Any]:
    """The signature of the version a label points to."""
    return tfserving.model_metadata(_resolve(registry, name, tfserving.version_selector(None, label)))


@router.post("/{name}:predict")
async def model_predict(
    name: ModelPath,
    request: Request,
    registry: RegistryDep,
    inference: InferenceDep,
) -> Response:
    """Images from `instances` (rows) or `inputs` (columns) of latents `z` and, for conditional models, `label`;
    text from `prompt` strings and optional `max_new_tokens`, `temperature`, `seed`."""
    return await _predict(request, _resolve(registry, name, None), inference)


@router.post("/{name}/versions/{version}:predict")
async def version_predict(
    name: ModelPath,
    version: VersionPath,
    request: Request,
    registry: RegistryDep,
    inference: InferenceDep,
) -> Response:
    """`:predict` on one version."""
    model_version = _resolve(registry, name, tfserving.parse_version_number(version))
    return await _predict(request, model_version, inference)


@router.post("/{name}/labels/{label}:predict")
async def label_predict(
    name: ModelPath,
    label: LabelPath,
    request: Request,
    registry: RegistryDep,
    inference: InferenceDep,
) -> Response:
    """`:predict` on the version a label points to."""
    model_version = _resolve(registry, name, tfserving.version_selector(None, label))
    return await _predict(request, model_version, inference)


def _resolve(registry: ModelRegistry, name: str, selector: int | str | None) -> ModelVersion:
    return registry.resolve(params.parse_model_name(name), selector)


async def _predict(
    request: Request,
    model_version: ModelVersion,
    inference: Inference,
) -> Response:
    predict = rest.parse_predict_request(await request.body(), model_version.serving.signature)
    outputs = await inference.infer(model_version, predict.tensors, http_request=request)
    return await anyio.to_thread.run_sync(rest.predict_response, predict.row_format, outputs)
