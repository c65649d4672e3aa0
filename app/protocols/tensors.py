"""The serving signature as named tensors, and generating from them: the part every inference protocol shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from starlette.requests import Request

from app.errors import InvalidParameter
from app.generation import GenerationService
from app.params import MAX_LATENT_VALUE
from app.registry import ModelVersion
from genserve import store
from genserve.store import ModelMetadata

# numpy kinds each input accepts: latents may come as integers (JSON `0`), class indices may not come as floats.
_ACCEPTED_KINDS = {store.LATENT_INPUT: "fiu", store.LABEL_INPUT: "iu"}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of the signature; -1 in `shape` means any size."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def signature_of(metadata: ModelMetadata) -> Signature:
    """The `serving_default` signature of a generator, as the store contract defines it."""
    if metadata.is_text:
        raise InvalidParameter(
            "model", f"{metadata.name!r} generates text; these inference protocols serve image generators"
        )
    inputs = [TensorSpec(store.LATENT_INPUT, np.dtype(np.float32), (-1, metadata.latent_dim))]
    if metadata.conditional:
        inputs.append(TensorSpec(store.LABEL_INPUT, np.dtype(np.int32), (-1,)))
    outputs = [TensorSpec(store.IMAGES_OUTPUT, np.dtype(np.uint8), (-1, *metadata.image_shape))]
    return Signature(inputs, outputs)


async def infer(
    generation: GenerationService,
    model_version: ModelVersion,
    tensors: dict[str, np.ndarray],
    max_rows: int,
    *,
    timeout_s: float | None = None,
    http_request: Request | None = None,
) -> dict[str, np.ndarray]:
    """The signature's outputs for named input `tensors`, generated through the shared batcher."""
    signature = signature_of(model_version.metadata)
    checked = check_inputs(signature, tensors, max_rows)
    result = await generation.images_for_latents(
        model_version,
        checked[store.LATENT_INPUT],
        checked.get(store.LABEL_INPUT),
        timeout_s=timeout_s,
        http_request=http_request,
    )
    return {store.IMAGES_OUTPUT: result.images}


def check_inputs(
    signature: Signature, tensors: dict[str, np.ndarray], max_rows: int
) -> dict[str, np.ndarray]:
    """`tensors` cast to the signature's dtypes, once names, kinds, shapes, row counts and values are right."""
    expected = signature.input_names()
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise InvalidParameter(unknown[0][:48], f"is not an input of this model; its inputs are {expected}")
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise InvalidParameter(missing[0], f"is a required input; this model takes {expected}")
    checked = {spec.name: _check_tensor(spec, tensors[spec.name], max_rows) for spec in signature.inputs}
    rows = {name: array.shape[0] for name, array in checked.items()}
    if len(set(rows.values())) > 1:
        raise InvalidParameter(expected[-1], f"every input needs the same number of rows, got {rows}")
    return checked


def _check_tensor(spec: TensorSpec, array: np.ndarray, max_rows: int) -> np.ndarray:
    if array.dtype.kind not in _ACCEPTED_KINDS.get(spec.name, "fiu"):
        raise InvalidParameter(spec.name, f"must hold {spec.dtype.name} values, got {array.dtype.name}")
    fixed = spec.shape[1:]
    if array.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(fixed, array.shape[1:], strict=True)
    ):
        raise InvalidParameter(spec.name, f"must have shape {list(spec.shape)}, got {list(array.shape)}")
    if not 1 <= array.shape[0] <= max_rows:
        raise InvalidParameter(spec.name, f"must hold between 1 and {max_rows} rows, got {array.shape[0]}")
    if spec.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InvalidParameter(spec.name, "every value must be finite (no NaN or infinity)")
        if np.abs(array).max() > MAX_LATENT_VALUE:
            raise InvalidParameter(spec.name, f"values must lie within ±{MAX_LATENT_VALUE:g}")
    else:
        limits = np.iinfo(spec.dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidParameter(spec.name, f"values must fit in {spec.dtype.name}")
    return array.astype(spec.dtype, copy=False)
