"""A bare TensorFlow Serving SavedModel served as it is: what it is, read from its signature and one probe call.

A version folder holding only a SavedModel (`genserve.store.is_bare_version`) has no metadata of its own. When its
``serving_default`` takes one float latent ``[None, D]`` and returns one image-shaped tensor, the service serves
it as an unconditional GAN (``source: inferred``): the latent size and image shape come from the signature, the
output range (`genserve.outputs`) from a call on standard-normal latents, and every call's output is converted
to uint8 pixels as the store's own graphs do inside theirs. Anything else fails to load with a message that
names the import command, which reads more kinds of model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.serving.runtime import ModelLoadError
from app.serving.signature_calls import SignatureCall
from genserve import outputs
from genserve.store import IMAGES_OUTPUT, LATENT_INPUT, ModelMetadata

INFERRED_DATASET = "unknown"


def inferred_generator(
    signature: Any, call: SignatureCall, path: Path
) -> tuple[ModelMetadata, SignatureCall]:
    """The metadata of the bare version at `path` and a call answering as the store's graphs do (``z`` to uint8
    ``images``); ModelLoadError when the signature does not look like an image generator."""
    inputs: dict[str, Any] = signature.structured_input_signature[1]
    answers: dict[str, Any] = signature.structured_outputs
    latent_name, latent_dim = _latent_input(inputs)
    image_name, image_shape = _image_output(answers)
    try:
        found = outputs.infer_output_range(_probe(call, latent_name, latent_dim, image_name))
    except ValueError as error:
        raise _not_a_generator(str(error)) from None
    metadata = ModelMetadata(
        name=path.parent.name,
        kind="dcgan",
        latent_dim=latent_dim,
        image_shape=image_shape,
        channels=image_shape[2],
        dataset=INFERRED_DATASET,
        epochs=0,
        source="inferred",
        origin={
            "latent_input": latent_name,
            "image_output": image_name,
            "output_range": found,
            "inferred": ["latent_dim", "image_shape", "output_range"],
        },
    )

    def generate(feed: dict[str, np.ndarray]) -> dict[str, Any]:
        raw = call({latent_name: feed[LATENT_INPUT]})[image_name]
        return {IMAGES_OUTPUT: outputs.to_pixels(np.asarray(raw), found, image_shape)}

    return metadata, generate


def _latent_input(inputs: dict[str, Any]) -> tuple[str, int]:
    latents = [
        (name, outputs.latent_length(spec.shape.as_list()))
        for name, spec in inputs.items()
        if spec.dtype.is_floating and spec.shape.rank is not None
    ]
    found = [(name, size) for name, size in latents if size is not None]
    if len(inputs) != 1 or len(found) != 1:
        described = ", ".join(
            f"{name} {spec.dtype.name} {spec.shape}" for name, spec in sorted(inputs.items())
        )
        raise _not_a_generator(
            f"serving_default takes {described or 'nothing'}, not one float latent [None, D]"
        )
    name, size = found[0]
    assert size is not None
    return name, size


def _image_output(answers: dict[str, Any]) -> tuple[str, tuple[int, int, int]]:
    images = [
        (name, spec)
        for name, spec in answers.items()
        if spec.shape.rank in (3, 4) and (spec.dtype.is_floating or spec.dtype.name == "uint8")
    ]
    if len(images) != 1:
        described = ", ".join(
            f"{name} {spec.dtype.name} {spec.shape}" for name, spec in sorted(answers.items())
        )
        raise _not_a_generator(
            f"serving_default returns {described or 'nothing'}, not one image [None, H, W, C]"
        )
    name, spec = images[0]
    try:
        return name, outputs.image_shape(spec.shape.as_list())
    except ValueError as error:
        raise _not_a_generator(str(error)) from None


def _not_a_generator(reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"a bare SavedModel that does not look like an image generator ({reason}): publish it with "
        "`python -m training import`, which reads more kinds of model"
    )


def _probe(call: SignatureCall, latent_name: str, latent_dim: int, image_name: str) -> np.ndarray:
    return np.asarray(call({latent_name: outputs.probe_latents(latent_dim)})[image_name])
