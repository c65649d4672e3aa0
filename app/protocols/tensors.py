"""The serving signature as named tensors, and generating from them: the part every inference protocol shares.

Image generators take latents `z` (and class indices `label`) and answer uint8 `images` through
`GenerationService`'s batcher. Text generators take what their in-graph sampler takes (`prompt` strings and,
optionally, `max_new_tokens`, `temperature` and `seed`) and answer `text`: each row is one sequence in the
version's continuous batcher, checked and defaulted exactly as `POST /generate` checks a text request.
String tensors are numpy object arrays of bytes, as TensorFlow holds them; each protocol converts its own wire
format to and from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request

from app import params
from app.config import Settings
from app.errors import InvalidParameter
from app.generation import GenerationService
from app.params import MAX_LATENT_VALUE
from app.registry import ModelVersion
from app.schemas import GenerateBody
from app.text_generation import TextGenerationService
from app.text_params import text_request
from genserve import store
from genserve.store import ModelMetadata

STRING = np.dtype(object)
# numpy kinds each input accepts, by the kind of its dtype: latents and temperatures may come as integers (JSON
# `0`), class indices, token counts and seeds may not come as floats, strings come only as strings.
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "O": "O"}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of the signature; -1 in `shape` means any size."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    required: bool = True


@dataclass(frozen=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def required_names(self) -> list[str]:
        return [spec.name for spec in self.inputs if spec.required]

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


TEXT_SIGNATURE = Signature(
    inputs=[
        TensorSpec(store.PROMPT_INPUT, STRING, (-1,)),
        TensorSpec(store.MAX_NEW_TOKENS_INPUT, np.dtype(np.int32), (-1,), required=False),
        TensorSpec(store.TEMPERATURE_INPUT, np.dtype(np.float32), (-1,), required=False),
        TensorSpec(store.SEED_INPUT, np.dtype(np.int64), (-1,), required=False),
    ],
    outputs=[TensorSpec(store.TEXT_OUTPUT, STRING, (-1,))],
)


def signature_of(metadata: ModelMetadata) -> Signature:
    """The `serving_default` signature of a generator, as the store contract defines it."""
    if metadata.is_text:
        return TEXT_SIGNATURE
    inputs = [TensorSpec(store.LATENT_INPUT, np.dtype(np.float32), (-1, metadata.latent_dim))]
    if metadata.conditional:
        inputs.append(TensorSpec(store.LABEL_INPUT, np.dtype(np.int32), (-1,)))
    outputs = [TensorSpec(store.IMAGES_OUTPUT, np.dtype(np.uint8), (-1, *metadata.image_shape))]
    return Signature(inputs, outputs)


def string_array(values: list[bytes]) -> np.ndarray:
    """A 1-D string tensor (object array of bytes) holding `values`."""
    array = np.empty(len(values), dtype=STRING)
    array[:] = values
    return array


@dataclass(frozen=True)
class Inference:
    """What the inference protocols generate through: images from the image batcher, text from the continuous
    batcher (each row checked as `POST /generate` checks a text request), at most `settings.max_n` rows."""

    generation: GenerationService
    text: TextGenerationService
    settings: Settings

    async def infer(
        self,
        model_version: ModelVersion,
        tensors: dict[str, np.ndarray],
        *,
        timeout_s: float | None = None,
        http_request: Request | None = None,
    ) -> dict[str, np.ndarray]:
        """The signature's outputs for named input `tensors`, generated through the model's shared batcher."""
        if model_version.metadata.is_text:
            return await self._infer_text(model_version, tensors, timeout_s, http_request)
        checked = check_inputs(signature_of(model_version.metadata), tensors, self.settings.max_n)
        result = await self.generation.images_for_latents(
            model_version,
            checked[store.LATENT_INPUT],
            checked.get(store.LABEL_INPUT),
            timeout_s=timeout_s,
            http_request=http_request,
        )
        return {store.IMAGES_OUTPUT: result.images}

    async def _infer_text(
        self,
        model_version: ModelVersion,
        tensors: dict[str, np.ndarray],
        timeout_s: float | None,
        http_request: Request | None,
    ) -> dict[str, np.ndarray]:
        """One sequence per row; a scalar prompt is answered with a scalar text, as TensorFlow's signature does."""
        checked = check_inputs(TEXT_SIGNATURE, tensors, self.settings.max_n)
        rows = range(len(checked[store.PROMPT_INPUT]))
        requests = [
            text_request(_generate_fields(checked, row), self.settings, model_version) for row in rows
        ]
        results = await self.text.generate_all(
            model_version, requests, timeout_s=timeout_s, http_request=http_request
        )
        texts = string_array([result.completions[0].text.encode() for result in results])
        return {store.TEXT_OUTPUT: texts.reshape(tensors[store.PROMPT_INPUT].shape)}


def _generate_fields(checked: dict[str, np.ndarray], row: int) -> GenerateBody:
    """Row `row` as the fields of a text `POST /generate` with n = 1; absent inputs take that route's defaults."""
    values = {name: array[row].item() for name, array in checked.items() if name != store.PROMPT_INPUT}
    temperature = checked.get(store.TEMPERATURE_INPUT)
    if temperature is not None:
        # The float32 nearest 0.7 stands for the 0.7 the client meant: its shortest decimal, as /generate reads it.
        values[store.TEMPERATURE_INPUT] = float(str(temperature[row]))
    return GenerateBody(prompt=_utf8(checked[store.PROMPT_INPUT][row]), **values)


def _utf8(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidParameter(store.PROMPT_INPUT, "must be UTF-8 text") from None


# What a signature's tensor may be called (TensorFlow's own rule for names, bounded); anything else cannot be an
# input, and is refused before its value is read, under the field that holds it.
_TENSOR_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,63}")


def tensor_name(name: object, field: str) -> str:
    """`name` when it can name a tensor; else a 4xx naming `field` (which holds the names)."""
    if not isinstance(name, str) or _TENSOR_NAME.fullmatch(name) is None:
        raise InvalidParameter(
            field, f"tensor names are 1-64 letters, digits or _ . / -, got {params.shown(name)}"
        )
    return name


def check_inputs(
    signature: Signature, tensors: dict[str, np.ndarray], max_rows: int
) -> dict[str, np.ndarray]:
    """The given inputs cast to the signature's dtypes, once names, kinds, shapes, row counts and values are right."""
    expected = signature.input_names()
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise InvalidParameter(unknown[0], f"is not an input of this model; its inputs are {expected}")
    missing = [name for name in signature.required_names() if name not in tensors]
    if missing:
        raise InvalidParameter(missing[0], f"is a required input; this model takes {expected}")
    checked = {
        spec.name: _check_tensor(spec, tensors[spec.name], max_rows)
        for spec in signature.inputs
        if spec.name in tensors
    }
    rows = {name: array.shape[0] for name, array in checked.items()}
    first = next(iter(rows.values()))
    mismatched = [name for name, count in rows.items() if count != first]
    if mismatched:
        raise InvalidParameter(mismatched[0], f"every input needs the same number of rows, got {rows}")
    return checked


def _check_tensor(spec: TensorSpec, array: np.ndarray, max_rows: int) -> np.ndarray:
    if array.dtype.kind not in _ACCEPTED_KINDS[spec.dtype.kind]:
        raise InvalidParameter(
            spec.name, f"must hold {_type_name(spec.dtype)} values, got {_type_name(array.dtype)}"
        )
    if spec.shape == (-1,) and array.ndim == 0:
        array = array.reshape(1)  # a scalar is one row: TensorFlow's own text signature takes scalars
    fixed = spec.shape[1:]
    if array.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(fixed, array.shape[1:], strict=True)
    ):
        raise InvalidParameter(spec.name, f"must have shape {list(spec.shape)}, got {list(array.shape)}")
    if not 1 <= array.shape[0] <= max_rows:
        raise InvalidParameter(spec.name, f"must hold between 1 and {max_rows} rows, got {array.shape[0]}")
    _check_values(spec, array)
    return array.astype(spec.dtype, copy=False)


def _check_values(spec: TensorSpec, array: np.ndarray) -> None:
    if spec.dtype == STRING:
        if not all(isinstance(value, bytes) for value in array.flat):
            raise InvalidParameter(spec.name, "must hold strings")
    elif spec.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InvalidParameter(spec.name, "every value must be finite (no NaN or infinity)")
        if spec.name == store.LATENT_INPUT and np.abs(array).max() > MAX_LATENT_VALUE:
            raise InvalidParameter(spec.name, f"values must lie within ±{MAX_LATENT_VALUE:g}")
    else:
        limits = np.iinfo(spec.dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidParameter(spec.name, f"values must fit in {spec.dtype.name}")


def _type_name(dtype: np.dtype) -> str:
    return "string" if dtype.kind in "OSU" else dtype.name
