"""Hand-built SavedModels published to a test store, for the evaluation and sampling tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from genserve.store import SIGNATURE_NAME, ModelMetadata, publish_version

LATENT_DIM = 8


def publish_module(store: Path, module: tf.Module, metadata: ModelMetadata, **extra_signatures: Any) -> Path:
    """Publish `module`, whose `generate` is the serving signature, as the next version in `store`."""

    def write_model(folder: Path) -> None:
        signatures = {SIGNATURE_NAME: module.generate, **extra_signatures}
        tf.saved_model.save(module, str(folder), signatures=signatures)

    return publish_version(store, metadata, write_model)


def module_metadata(name: str, kind: str, **overrides: Any) -> ModelMetadata:
    """Metadata of a hand-built test model: 28x28 RGB shapes and LATENT_DIM unless overridden."""
    values: dict[str, Any] = {"latent_dim": LATENT_DIM, "image_shape": (28, 28, 3), "channels": 3}
    return ModelMetadata(name=name, kind=kind, dataset="shapes", epochs=0, **(values | overrides))
