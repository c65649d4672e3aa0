"""TensorFlow Serving's REST API: model status, metadata and `:predict` (row and columnar formats).

`/v1/models/{name}[/versions/{version}|/labels/{label}]` with `/metadata` or `:predict`, answering the JSON
that TensorFlow Serving answers, so its clients and tooling work unchanged. Prediction goes through the same
batchers as `/generate`, for image, text and sound generators alike.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Depends, Path, Request
from fastapi.responses import Response

from app.api.deps import InferenceDep, RegistryDep
from app.api.openapi import ModelPath
from app.protocols.errors import protocol_router
from app.protocols.inference import Inference
from app.protocols.tfserving import rest
from app.protocols.tfserving import status as tfserving
from app.serving.registry import ModelVersion

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


def _newest(name: ModelPath, inference: InferenceDep) -> ModelVersion:
    return inference.resolve(name, None)


def _numbered(name: ModelPath, version: VersionPath, inference: InferenceDep) -> ModelVersion:
    return inference.resolve(name, tfserving.parse_version_number(version))


def _labelled(name: ModelPath, label: LabelPath, inference: InferenceDep) -> ModelVersion:
    return inference.resolve(name, tfserving.version_selector(None, label))


# The version a path names: 404 when the model, version or label is unknown, 503 while it cannot serve.
NewestVersion = Annotated[ModelVersion, Depends(_newest)]
NumberedVersion = Annotated[ModelVersion, Depends(_numbered)]
LabelledVersion = Annotated[ModelVersion, Depends(_labelled)]


@router.get("/{name}/metadata")
async def model_metadata(model_version: NewestVersion) -> dict[str, Any]:
    """The newest available version's signature (GetModelMetadataResponse)."""
    return tfserving.model_metadata(model_version)


@router.get("/{name}/versions/{version}/metadata")
async def version_metadata(model_version: NumberedVersion) -> dict[str, Any]:
    """One version's signature."""
    return tfserving.model_metadata(model_version)


@router.get("/{name}/labels/{label}/metadata")
async def label_metadata(model_version: LabelledVersion) -> dict[str, Any]:
    """The signature of the version a label points to."""
    return tfserving.model_metadata(model_version)


@router.post("/{name}:predict")
async def model_predict(model_version: NewestVersion, request: Request, inference: InferenceDep) -> Response:
    """Images (or sound generators' float `audio`) from `instances` (rows) or `inputs` (columns) of latents `z`
    and, for conditional models, `label`; text from `prompt` strings and optional `max_new_tokens`,
    `temperature`, `seed`."""
    return await _predict(request, model_version, inference)


@router.post("/{name}/versions/{version}:predict")
async def version_predict(
    model_version: NumberedVersion, request: Request, inference: InferenceDep
) -> Response:
    """`:predict` on one version."""
    return await _predict(request, model_version, inference)


@router.post("/{name}/labels/{label}:predict")
async def label_predict(
    model_version: LabelledVersion, request: Request, inference: InferenceDep
) -> Response:
    """`:predict` on the version a label points to."""
    return await _predict(request, model_version, inference)


async def _predict(
    request: Request,
    model_version: ModelVersion,
    inference: Inference,
) -> Response:
    signature = model_version.serving.signature
    predict = await inference.parse(
        lambda body: rest.parse_predict_request(body, signature), await request.body()
    )
    outputs = await inference.infer(model_version, predict.tensors, http_request=request)
    return await anyio.to_thread.run_sync(rest.predict_response, predict.row_format, outputs)
