"""Publish a generator to the model store as a TF-Serving-compatible SavedModel.

The SavedModel's only signature maps latents to finished pixels, so the service (or TF Serving) needs no
Keras and no post-processing: ``serving_default(z: float32 [None, latent_dim]) -> {"images": uint8
[None, H, W, C]}``. Conditional generators take ``label: int32 [None]`` (class indices) as well. A VAE's
decoder is exported the same way, with its encoder as the ``encode`` signature (uint8 images to the
posterior's mean and log-variance).

A class-conditional run can also be published as an unconditional model (``unconditional=True``): its
``serving_default(z)`` takes latents alone and draws each image's class from the first latent coordinate
(`training.cdcgan.class_from_latent`, every class equally often), so a dataset's labels can lift an
unconditional model's quality.

A VAE with a learned latent prior (`training.prior`) keeps the same contract, with the flow ``f`` inside the
graph: ``serving_default(u)`` decodes ``f(u)`` for the standard normal ``u`` a client draws, and ``encode``
answers in u-space (``f^{-1}`` of the posterior mean, and `LatentFlow.posterior_in_base`'s log-variance), so
encoding an image and generating from its latent still reconstructs it exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from genserve.store import (
    ModelMetadata,
    publish_version,
)
from training.audio.serving import SoundServer
from training.cdcgan import (
    build_conditional_generator,
)
from training.datasets.sounds import SoundFormat
from training.metadata import (
    CLASS_FROM_LATENT,
    CLASS_WEIGHTS,
    build_metadata,
    generated_shape,
    training_summary,
)
from training.models import EMA_GENERATOR_SLOT, ENCODER_SLOT, GENERATOR_SLOT
from training.networks import build_generator
from training.prior import LatentFlow, restore_prior, weights_only_copy
from training.reclustering import read_pseudo_classes
from training.run_folder import BEST_DIR, CHECKPOINTS_DIR, HISTORY_FILE, PRIOR_DIR, STOPPED_ON_TIME_BUDGET_KEY
from training.run_info import RunInfo, read_run_info
from training.serving_graph import GeneratorServer, float32_copy
from training.vae import build_decoder, build_encoder

logger = logging.getLogger(__name__)


def export_generator(
    generator: keras.Model,
    metadata: ModelMetadata,
    store: Path,
    encoder: keras.Model | None = None,
    prior: LatentFlow | None = None,
    sound: SoundFormat | None = None,
) -> Path:
    """Publish `generator` as the next version of `metadata.name` in `store`; return the version folder.

    VAEs (``metadata.kind == "vae"``) must pass their `encoder`, and their `prior` when the training config
    names a flow prior; sound generators (``"specgan"``) pass their `sound` format; other kinds pass none.
    """
    classes_from_latent = _classes_from_latent(metadata)
    _check_generator_matches(generator, metadata, classes_from_latent)
    _check_encoder_matches(encoder, metadata)
    _check_prior_matches(prior, metadata)
    if metadata.is_audio != (sound is not None):
        raise ValueError(
            f"a {metadata.kind!r} model is exported {'with' if metadata.is_audio else 'without'} sound="
        )
    server_type = functools.partial(SoundServer, sound=sound) if sound is not None else GeneratorServer
    server = server_type(
        float32_copy(generator),
        metadata.latent_dim,
        metadata.conditional,
        encoder=float32_copy(encoder) if encoder is not None else None,
        prior=weights_only_copy(prior) if prior is not None else None,
        classes_from_latent=classes_from_latent,
        latent_scale=metadata.latent_scale,
        # The store contract gives sound generators serving_default alone.
        blend_classes=not metadata.is_audio,
        class_weights=metadata.training_config.get(CLASS_WEIGHTS) if classes_from_latent else None,
    )

    def write_model(folder: Path) -> None:
        tf.saved_model.save(server, str(folder), signatures=server.signatures())

    version = publish_version(Path(store), metadata, write_model)
    logger.info("published %s", version)
    return version


def _classes_from_latent(metadata: ModelMetadata) -> int:
    """How many classes an unconditionally published conditional generator draws from; 0 for other models."""
    if not metadata.training_config.get(CLASS_FROM_LATENT):
        return 0
    class_names = metadata.training_config.get("dataset_class_names") or []
    if metadata.conditional or len(class_names) < 2:
        raise ValueError(
            f"{CLASS_FROM_LATENT!r} describes an unconditional model of a conditional run: its metadata needs no "
            "class_names and a training_config with the run's dataset_class_names"
        )
    return len(class_names)


def _check_generator_matches(
    generator: keras.Model, metadata: ModelMetadata, classes_from_latent: int = 0
) -> None:
    latent_dim = generator.inputs[0].shape[-1]
    expected_shape = generated_shape(metadata)
    image_shape = tuple(generator.outputs[0].shape[1:])
    if latent_dim != metadata.latent_dim or image_shape != expected_shape:
        raise ValueError(
            f"generator maps [None, {latent_dim}] to {image_shape} but the metadata says latent_dim "
            f"{metadata.latent_dim} and image_shape {expected_shape}: export the matching generator"
        )
    takes_labels = len(generator.inputs) == 2
    if takes_labels != (metadata.conditional or classes_from_latent > 0):
        raise ValueError(
            f"the generator {'takes' if takes_labels else 'takes no'} class labels but the metadata describes a "
            f"{'conditional' if metadata.conditional else 'unconditional'} {metadata.kind!r} model: "
            "export the matching generator, with class_names for conditional ones"
        )


def _check_encoder_matches(encoder: keras.Model | None, metadata: ModelMetadata) -> None:
    if encoder is None:
        if metadata.has_encoder:
            raise ValueError(f"a {metadata.kind!r} model is exported with its encoder: pass encoder=")
        return
    if not metadata.has_encoder:
        raise ValueError(f"a {metadata.kind!r} model has no encoder signature: export it without encoder=")
    image_shape = tuple(encoder.inputs[0].shape[1:])
    latent_dims = [int(output.shape[-1]) for output in encoder.outputs]
    if image_shape != tuple(metadata.image_shape) or latent_dims != [metadata.latent_dim] * 2:
        raise ValueError(
            f"encoder maps {image_shape} to latents of {latent_dims} but the metadata says image_shape "
            f"{tuple(metadata.image_shape)} and latent_dim {metadata.latent_dim}: export the matching encoder"
        )


def _check_prior_matches(prior: LatentFlow | None, metadata: ModelMetadata) -> None:
    expected = metadata.training_config.get("latent_prior", "normal") == "flow"
    if (prior is not None) != expected:
        raise ValueError(
            f"the training config of {metadata.name!r} says latent_prior "
            f"{metadata.training_config.get('latent_prior', 'normal')!r}: export "
            f"{'with its flow as prior=' if expected else 'without prior='}"
        )
    if prior is not None and prior.latent_dim != metadata.latent_dim:
        raise ValueError(
            f"the prior maps {prior.latent_dim}-d latents but the metadata says latent_dim {metadata.latent_dim}: "
            "export the flow fit to this VAE"
        )


def export_checkpoint(
    run_dir_or_checkpoint: Path,
    store: Path,
    name: str | None = None,
    use_ema: bool = True,
    unconditional: bool = False,
    latent_scale: float = 1.0,
    stopped_on_time_budget: bool | None = None,
) -> Path:
    """Publish the generator saved in a run folder's latest checkpoint, or in a given checkpoint prefix.

    `use_ema` picks the averaged generator; runs trained without one fall back to the raw generator. A VAE
    with a flow prior is published with the flow saved in the run folder, which must be fit to the same epoch.
    `unconditional` publishes a conditional run's generator as an unconditional model that draws each image's
    class from its latent, and `latent_scale` the spread its latents are sampled at (`build_metadata`).
    `stopped_on_time_budget` goes into the training summary: whether the run this checkpoint came from ended on
    its time budget; None reads that from the run's history.json.
    """
    run_dir, checkpoint_path = _locate_checkpoint(Path(run_dir_or_checkpoint))
    info = read_run_info(run_dir)
    trained_classes = (
        read_pseudo_classes(run_dir, info.config.pseudo_classes) if info.config.pseudo_classes else None
    )
    if trained_classes is not None:  # a re-clustered run's last classes, not its first
        info = dataclasses.replace(info, class_weights=[float(share) for share in trained_classes.weights])
    averaged = use_ema and info.config.ema_decay > 0.0
    if use_ema and not averaged:
        logger.info("run %s kept no averaged generator; exporting the raw one", run_dir)
    generator = _build_generator(info)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    slot = EMA_GENERATOR_SLOT if averaged else GENERATOR_SLOT
    networks = {slot: generator}
    encoder = None
    if info.config.model == "vae":
        encoder = networks[ENCODER_SLOT] = build_encoder(info.image_shape, info.config.latent_dim)
    checkpoint = tf.train.Checkpoint(**networks, epoch=epoch)
    checkpoint.restore(checkpoint_path).expect_partial().assert_existing_objects_matched()
    prior, prior_fit = _saved_prior(run_dir, info, int(epoch))
    history = _read_history(run_dir)
    if stopped_on_time_budget is None:
        stopped_on_time_budget = history.get(STOPPED_ON_TIME_BUDGET_KEY) is not None
    summary = training_summary(
        [entry for entry in history.get("epochs", []) if int(entry.get("epoch", 0)) <= int(epoch)],
        stopped_on_time_budget=stopped_on_time_budget,
        prior_fit=prior_fit,
    )
    metadata = build_metadata(
        info,
        epochs=int(epoch),
        averaged=averaged,
        name=name,
        summary=summary,
        # Pseudo-classes name clusters, not anything a caller could ask for: such a run is always published so.
        unconditional=unconditional or info.config.pseudo_classes > 0,
        latent_scale=latent_scale,
    )
    return export_generator(generator, metadata, store, encoder=encoder, prior=prior, sound=info.sound)


def _saved_prior(run_dir: Path, info: RunInfo, epoch: int) -> tuple[LatentFlow | None, dict[str, Any] | None]:
    """The flow prior a run saved and its fit record, if its config names one; fit to checkpoint `epoch`."""
    if info.config.latent_prior != "flow":
        return None, None
    prior, fit = restore_prior(run_dir / PRIOR_DIR, info.config.latent_dim)
    if int(fit["vae_epoch"]) != epoch:
        raise ValueError(
            f"the run's latent prior was fit to the VAE of epoch {fit['vae_epoch']}, not to this checkpoint's "
            f"epoch {epoch}: export the checkpoint of epoch {fit['vae_epoch']}"
        )
    return prior, fit


def _read_history(run_dir: Path) -> dict[str, Any]:
    """The run's history.json (per-epoch ``epochs`` and how the run ended), or {} if it kept none."""
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return {}
    history: dict[str, Any] = json.loads(path.read_text())
    return history


def _build_generator(info: RunInfo) -> keras.Model:
    """An untrained generator of the architecture the run used, for a checkpoint to fill."""
    config = info.config
    if config.model == "vae":
        return build_decoder(config.latent_dim, info.image_shape)
    if not config.conditional:
        return build_generator(config.latent_dim, info.image_shape)
    if not info.dataset_class_names:
        raise ValueError(f"run {config.name!r} trained a {config.model!r} but recorded no class names")
    return build_conditional_generator(config.latent_dim, info.image_shape, len(info.dataset_class_names))


def _locate_checkpoint(path: Path) -> tuple[Path, str]:
    """(run folder, checkpoint prefix) for a run folder, its checkpoints or best folder, or a checkpoint prefix."""
    if path.is_dir():
        folder = path if path.name in (CHECKPOINTS_DIR, BEST_DIR) else path / CHECKPOINTS_DIR
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
