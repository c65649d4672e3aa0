"""Publish a generator to the model store as a TF-Serving-compatible SavedModel.

The SavedModel's only signature maps latents to finished pixels, so the service (or TF Serving) needs no
Keras and no post-processing: ``serving_default(z: float32 [None, latent_dim]) -> {"images": uint8
[None, H, W, C]}``.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from genserve.store import IMAGES_OUTPUT, LATENT_INPUT, SIGNATURE_NAME, ModelMetadata, publish_version
from training.config import CHECKPOINTS_DIR, RunInfo, read_run_info
from training.dcgan import build_generator

logger = logging.getLogger(__name__)


class GeneratorServer(tf.Module):
    """Holds a generator and the graph that turns its [-1, 1] output into uint8 pixels."""

    def __init__(self, generator: keras.Model, latent_dim: int) -> None:
        super().__init__(name="generator_server")
        self.generator = generator
        latent_spec = tf.TensorSpec([None, latent_dim], tf.float32, name=LATENT_INPUT)
        self.serve = tf.function(self._generate, input_signature=[latent_spec])

    def _generate(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        images = self.generator(z, training=False)
        pixels = tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0)
        return {IMAGES_OUTPUT: tf.cast(pixels, tf.uint8)}


def export_generator(generator: keras.Model, metadata: ModelMetadata, store: Path) -> Path:
    """Publish `generator` as the next version of `metadata.name` in `store`; return the version folder."""
    _check_generator_matches(generator, metadata)
    server = GeneratorServer(_float32_copy(generator), metadata.latent_dim)

    def write_model(folder: Path) -> None:
        signature = server.serve.get_concrete_function()
        tf.saved_model.save(server, str(folder), signatures={SIGNATURE_NAME: signature})

    version = publish_version(Path(store), metadata, write_model)
    logger.info("published %s", version)
    return version


def _float32_copy(generator: keras.Model) -> keras.Model:
    """`generator` itself if it computes in float32, else a float32 twin with the same weights.

    Serving hardware may lack fast bfloat16, and float32 keeps the served pixels equal to the float32 math.
    """
    if all(layer.dtype_policy.name == "float32" for layer in generator.layers):
        return generator

    def to_float32(layer: keras.layers.Layer) -> keras.layers.Layer:
        return type(layer).from_config({**layer.get_config(), "dtype": "float32"})

    twin = keras.models.clone_model(generator, clone_function=to_float32)
    twin.set_weights(generator.get_weights())
    return twin


def _check_generator_matches(generator: keras.Model, metadata: ModelMetadata) -> None:
    latent_dim = generator.input_shape[-1]
    image_shape = tuple(generator.output_shape[1:])
    if latent_dim != metadata.latent_dim or image_shape != tuple(metadata.image_shape):
        raise ValueError(
            f"generator maps [None, {latent_dim}] to {image_shape} but the metadata says latent_dim "
            f"{metadata.latent_dim} and image_shape {tuple(metadata.image_shape)}: export the matching generator"
        )


def framework_versions() -> dict[str, str]:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def build_metadata(info: RunInfo, *, epochs: int, averaged: bool, name: str | None = None) -> ModelMetadata:
    """Store metadata for a DCGAN trained as `info` describes; dataset class names go in training_config."""
    config = info.config
    training_config = config.to_dict()
    training_config["dataset_class_names"] = info.dataset_class_names
    training_config["exported_generator"] = "ema" if averaged else "raw"
    return ModelMetadata(
        name=name or config.name,
        kind="dcgan",
        latent_dim=config.latent_dim,
        image_shape=info.image_shape,
        channels=info.image_shape[2],
        class_names=None,
        dataset=config.dataset,
        training_config=training_config,
        epochs=epochs,
        seed=config.seed,
        framework_versions=framework_versions(),
    )


def export_checkpoint(
    run_dir_or_checkpoint: Path, store: Path, name: str | None = None, use_ema: bool = True
) -> Path:
    """Publish the generator saved in a run folder's latest checkpoint, or in a given checkpoint prefix.

    `use_ema` picks the averaged generator; runs trained without one fall back to the raw generator.
    """
    run_dir, checkpoint_path = _locate_checkpoint(Path(run_dir_or_checkpoint))
    info = read_run_info(run_dir)
    averaged = use_ema and info.config.ema_decay > 0.0
    if use_ema and not averaged:
        logger.info("run %s kept no averaged generator; exporting the raw one", run_dir)
    generator = build_generator(info.config.latent_dim, info.image_shape)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    slot = "ema_generator" if averaged else "generator"
    checkpoint = tf.train.Checkpoint(**{slot: generator}, epoch=epoch)
    checkpoint.restore(checkpoint_path).expect_partial().assert_existing_objects_matched()
    metadata = build_metadata(info, epochs=int(epoch), averaged=averaged, name=name)
    return export_generator(generator, metadata, store)


def _locate_checkpoint(path: Path) -> tuple[Path, str]:
    """(run folder, checkpoint prefix) for a run folder, its checkpoints folder or a checkpoint prefix."""
    if path.is_dir():
        folder = path if path.name == CHECKPOINTS_DIR else path / CHECKPOINTS_DIR
        latest = tf.train.latest_checkpoint(str(folder))
        if latest is None:
            raise FileNotFoundError(
                f"no checkpoint in {str(folder)!r}: train the run first, or pass a checkpoint"
            )
        return folder.parent, latest
    if Path(f"{path}.index").is_file():
        return path.parent.parent, str(path)
    raise FileNotFoundError(
        f"{str(path)!r} is neither a run folder nor a checkpoint prefix (like runs/NAME/checkpoints/ckpt-940)"
    )
