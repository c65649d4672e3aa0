"""TensorFlow Serving's messages as plain dicts, shared by its REST API and its gRPC API.

The REST API answers the JSON form of TensorFlow Serving's protobuf messages (field names as in the protos,
enums by name, int64 as strings); the gRPC server parses the same dicts into the messages themselves, so the
two can never describe a model differently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.api import params
from app.server.errors import InvalidParameter, VersionNotFound
from app.serving.registry import ModelEntry, ModelRegistry, ModelVersion, VersionStatus
from genserve import store
from genserve.signatures import STRING, TensorSpec

PREDICT_METHOD = "tensorflow/serving/predict"
SIGNATURE_DEF_FIELD = "signature_def"
TF_DTYPES = {
    np.dtype(np.float32): "DT_FLOAT",
    np.dtype(np.int32): "DT_INT32",
    np.dtype(np.uint8): "DT_UINT8",
    np.dtype(np.int64): "DT_INT64",
    STRING: "DT_STRING",
}
# TensorFlow Serving's version states: a version that failed to load has ended, with the load error.
_STATES = {
    VersionStatus.LOADING: "LOADING",
    VersionStatus.AVAILABLE: "AVAILABLE",
    VersionStatus.FAILED: "END",
}


def check_signature_name(name: str) -> None:
    """Only `serving_default` generates; an empty name means it, as in TensorFlow Serving."""
    if name not in ("", store.SIGNATURE_NAME):
        raise InvalidParameter(
            "signature_name", f"this model serves only {store.SIGNATURE_NAME!r}, got {params.shown(name)}"
        )


def version_selector(version: int | None, label: str | None) -> int | str | None:
    """What the registry resolves: a version number, a label, or None for the newest available version."""
    if version is not None and label:
        raise InvalidParameter("version_label", "give either a version or a version label, not both")
    if label:
        if not store.is_label(label):
            raise InvalidParameter("version_label", f"is not a version label: {params.shown(label)}")
        return label
    return version


def parse_version_number(text: str) -> int:
    number = store.parse_version_name(text)
    if number is None:
        raise InvalidParameter("version", f"must be a positive integer, got {params.shown(text)}")
    return number


def model_status(registry: ModelRegistry, name: str, selector: int | str | None) -> dict[str, Any]:
    """GetModelStatusResponse: every version of the model, or the one `selector` names."""
    entry = registry.get_entry(params.parse_model_name(name))
    return {"model_version_status": [_version_status(v) for v in _versions(entry, selector)]}


def model_metadata(model_version: ModelVersion) -> dict[str, Any]:
    """GetModelMetadataResponse with the `signature_def` map of a loaded version."""
    return {
        "model_spec": model_spec(model_version),
        "metadata": {SIGNATURE_DEF_FIELD: signature_def_map(model_version)},
    }


def model_spec(model_version: ModelVersion, signature_name: str = "") -> dict[str, Any]:
    return {
        "name": model_version.name,
        "signature_name": signature_name,
        "version": str(model_version.version),
    }


def signature_def_map(model_version: ModelVersion) -> dict[str, Any]:
    signature = model_version.serving.signature
    return {
        "signature_def": {
            store.SIGNATURE_NAME: {
                "inputs": {spec.name: _tensor_info(spec) for spec in signature.inputs},
                "outputs": {spec.name: _tensor_info(spec) for spec in signature.outputs},
                "method_name": PREDICT_METHOD,
            }
        }
    }


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dims = [{"size": str(size), "name": ""} for size in spec.shape]
    return {"dtype": TF_DTYPES[spec.dtype], "tensor_shape": {"dim": dims, "unknown_rank": False}}


def _versions(entry: ModelEntry, selector: int | str | None) -> list[ModelVersion]:
    if selector is None:
        return sorted(entry.versions.values(), key=lambda v: v.version)
    number = entry.labels.get(selector) if isinstance(selector, str) else selector
    model_version = entry.versions.get(number) if number is not None else None
    if model_version is None:
        raise VersionNotFound(f"model {entry.name!r} has no version {params.shown(selector)}")
    return [model_version]


def _version_status(model_version: ModelVersion) -> dict[str, Any]:
    failed = model_version.status is VersionStatus.FAILED
    return {
        "version": str(model_version.version),
        "state": _STATES[model_version.status],
        "status": {
            "error_code": "UNKNOWN" if failed else "OK",
            "error_message": (model_version.error or "") if failed else "",
        },
    }
