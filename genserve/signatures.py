"""The `serving_default` signature of each kind of generator as named tensors: names, dtypes and shapes.

The store contract in `genserve.store` names the tensors; this module says what each kind's signature holds, for
the service's inference protocols (which check requests against it and describe it to clients) and for tests
that hold the exporters and the docs to it. String tensors are numpy object arrays of bytes, as TensorFlow
holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genserve import store
from genserve.store import ModelMetadata

STRING = np.dtype(object)


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


def image_signature(metadata: ModelMetadata) -> Signature:
    """An image generator's: latents `z` (and class indices `label`) in, uint8 `images` out."""
    return image_signature_of(
        metadata.latent_dim, tuple(metadata.image_shape), conditional=metadata.conditional
    )


def image_signature_of(latent_dim: int, image_shape: tuple[int, ...], *, conditional: bool) -> Signature:
    """`image_signature` from the sizes alone, as an exporter knows them before any metadata exists."""
    inputs = [TensorSpec(store.LATENT_INPUT, np.dtype(np.float32), (-1, latent_dim))]
    if conditional:
        inputs.append(TensorSpec(store.LABEL_INPUT, np.dtype(np.int32), (-1,)))
    outputs = [TensorSpec(store.IMAGES_OUTPUT, np.dtype(np.uint8), (-1, *image_shape))]
    return Signature(inputs, outputs)


def audio_signature(metadata: ModelMetadata) -> Signature:
    """A sound generator's: latents `z` (and class indices `label`) in, float32 `audio` waveforms out."""
    if metadata.audio is None:
        raise ValueError(f"{metadata.name!r} is not a sound generator")
    return audio_signature_of(metadata.latent_dim, metadata.audio.samples, conditional=metadata.conditional)


def audio_signature_of(latent_dim: int, samples: int, *, conditional: bool) -> Signature:
    """`audio_signature` from the sizes alone, as an exporter knows them before any metadata exists."""
    inputs = image_signature_of(latent_dim, (), conditional=conditional).inputs
    outputs = [TensorSpec(store.AUDIO_OUTPUT, np.dtype(np.float32), (-1, samples))]
    return Signature(inputs, outputs)


def dtype_name(dtype: np.dtype) -> str:
    """A tensor's dtype as TensorFlow names it: float32, int32, uint8, string."""
    return "string" if dtype == STRING else dtype.name


def describe(spec: TensorSpec, sizes: dict[int, str] | None = None) -> str:
    """`name dtype [dims]`, e.g. ``z float32 [None, 128]``; `sizes` names particular sizes (128: latent_dim)."""
    names = {-1: "None", **(sizes or {})}
    dims = ", ".join(names.get(size, str(size)) for size in spec.shape)
    return f"{spec.name} {dtype_name(spec.dtype)} [{dims}]"


def signature_of(metadata: ModelMetadata) -> Signature:
    """The `serving_default` signature of a generator, as the store contract defines it."""
    if metadata.is_text:
        return TEXT_SIGNATURE
    return audio_signature(metadata) if metadata.is_audio else image_signature(metadata)


def string_array(values: list[bytes]) -> np.ndarray:
    """A 1-D string tensor (object array of bytes) holding `values`."""
    array = np.empty(len(values), dtype=STRING)
    array[:] = values
    return array
