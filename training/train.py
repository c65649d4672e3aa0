"""Train a DCGAN, conditional DCGAN or VAE as a `TrainConfig` says: data, model, callbacks, resume, and export at the end.

With ``distribute`` set (`training.distribute`) the model is built under the strategy, every worker trains in
lock-step and resumes from the chief's checkpoints, and the chief alone publishes, once.

A VAE with a flow prior (``latent_prior="flow"``) is trained first; the chief then fits the flow to the
trained encoder's posterior means of the training images (`training.prior`) and saves it in the run folder,
refitting it on every call, so ``resume=True`` after the last epoch fits it again. Under a time budget the
VAE's epochs get `config.network_time_budget` and the flow what is left of the budget (at least one epoch).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.builders import build_model
from training.callbacks import Checkpointer, HistoryWriter, SampleGrid, read_best
from training.clusters import pseudo_classes
from training.config import TrainConfig
from training.datasets import ImageDataset, load_dataset, make_tf_dataset
from training.datasets.sounds import SpectrogramDataset
from training.distribute import (
    Placement,
    chief_value,
    detached_copy,
    distribute_batches,
    log_distribution,
    make_placement,
    publish_once,
    remove_worker_folder,
)
from training.evaluate import pick_latent_scale
from training.export import export_checkpoint, export_generator
from training.metadata import build_metadata, training_summary
from training.models import GenerativeModel
from training.options import AUTO_LATENT_SCALE
from training.prior import LatentFlow, fit_latent_prior
from training.progress import SampleQuality
from training.reclustering import PseudoLabels, Reclustering
from training.run import TimeBudget, fit_epochs, seed_everything
from training.run_info import RunInfo, read_run_info
from training.vae import VAE

logger = logging.getLogger(__name__)

_SECONDS_PER_MINUTE = 60.0


@dataclass
class TrainResult:
    """Where a run left its files, what it published, and what each epoch measured."""

    run_dir: Path
    version_dir: Path | None
    history: list[dict[str, Any]]
    epochs_completed: int
    stopped_on_time_budget: bool = False


def train(config: TrainConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train (or resume) the run `config` describes, export it if asked, and return what happened.

    `callbacks` run after the built-in ones (sample check, history, sample grid, checkpoint, time budget) at
    the end of each epoch. On Ctrl-C a checkpoint is saved before the KeyboardInterrupt propagates, so
    `resume=True` picks it up. A non-chief worker of a multi-worker run returns no version and removes its
    own folder when done.
    """
    placement = make_placement(config.distribute)
    seed_everything(config.seed)
    scored = _load(config)  # with the dataset's own labels, for the classifier that scores samples
    _check_latent_scale_search(config, scored)
    run_dir = placement.run_dir(config.run_path)
    dataset, pseudo = _training_classes(config, scored, run_dir, placement)
    info = RunInfo(
        config,
        dataset.image_shape,
        dataset.class_names,
        placement.describe(config.batch_size),
        class_weights=pseudo.weights() if pseudo is not None else None,
        sound=scored.sound_format if isinstance(scored, SpectrogramDataset) else None,
    )
    log_distribution(info.distribution or {})
    num_classes = _num_classes(config, dataset)
    with placement.strategy.scope():
        gan = build_model(config, dataset.image_shape, num_classes)
        if placement.distributed:
            gan.build_optimizers()  # the slots are created here, under the strategy, not inside a replica
    # Outside the scope: the epoch and step counters are plain variables, read and written by this process.
    checkpointer = Checkpointer(gan, run_dir, info, restore_from=config.run_path)
    with placement.strategy.scope():
        initial_epoch = _starting_epoch(config, info, checkpointer)
    history = HistoryWriter(run_dir, config.batch_size, initial_epoch)
    network_budget = config.network_time_budget
    budget = TimeBudget(network_budget) if network_budget is not None else None
    started = time.monotonic()
    if initial_epoch < config.epochs:
        # Every worker must shuffle alike for each to take its own part of every global batch.
        data_seed = chief_value(placement, _data_seed(config.seed))
        data = _batches(dataset, config, data_seed, placement, pseudo)
        # The sample check writes into the epoch's logs, so it runs before the history records them.
        quality = _sample_quality(config, scored)  # checked on every worker, measured on the chief
        built_in: list[keras.callbacks.Callback] = [*(quality if placement.is_chief else [])]
        if pseudo is not None and config.recluster_every:  # before the history, which records what it moved
            built_in.append(Reclustering(pseudo, dataset.images, config.recluster_every, config.seed or 0))
        built_in.append(history)
        if placement.is_chief:
            built_in.append(SampleGrid(run_dir, config.latent_dim, config.sample_grid, num_classes))
        built_in += [checkpointer, *([budget] if budget is not None else [])]
        _fit(gan, data, config, initial_epoch, [*built_in, *callbacks], checkpointer, placement)
    else:
        logger.info(
            "run %s already has %d of %d epochs; nothing to train",
            config.run_path,
            initial_epoch,
            config.epochs,
        )
    epochs_completed = int(checkpointer.epoch)
    stopped = budget is not None and budget.exhausted
    if stopped and placement.is_chief:
        history.record_time_budget_stop(epochs_completed)
    if not placement.is_chief:
        remove_worker_folder(placement, config.run_path)
        return TrainResult(config.run_path, None, history.epochs, epochs_completed, stopped)
    prior, prior_fit = None, None
    if isinstance(gan, VAE) and config.latent_prior == "flow":
        minutes_left = _minutes_left(config.time_budget, started)
        prior, prior_fit = fit_latent_prior(
            gan, dataset, config, placement, epochs_completed, minutes_left, verbose=_verbosity(placement)
        )
        checkpointer.write_run_info()  # a run resumed only to fit the prior now says it has one
    summary = training_summary(history.epochs, stopped_on_time_budget=stopped, prior_fit=prior_fit)
    version_dir = None
    if config.export:
        if pseudo is not None:  # the classes the run trained on last, re-clustered or not
            info = dataclasses.replace(info, class_weights=pseudo.weights())
        publish: Callable[..., Path] = functools.partial(
            _export, gan, info, epochs_completed, summary, placement, prior
        )
        if config.publish == "best":
            best = read_best(run_dir)
            if best is None:
                logger.warning(
                    "no epoch was scored (eval_every %d): publishing the last one", config.eval_every
                )
            else:
                logger.info("publishing the epoch with the lowest FID: %d (%.3f)", best["epoch"], best["fid"])
                publish = functools.partial(
                    export_checkpoint,
                    Path(best["checkpoint"]),
                    use_ema=config.export_ema,
                    stopped_on_time_budget=stopped,
                )
        version_dir = publish_once(
            placement, config.run_path, epochs_completed, functools.partial(_publish_scaled, config, publish)
        )
    return TrainResult(config.run_path, version_dir, history.epochs, epochs_completed, stopped)


def _minutes_left(time_budget: float | None, started: float) -> float | None:
    if time_budget is None:
        return None
    return time_budget - (time.monotonic() - started) / _SECONDS_PER_MINUTE


def _verbosity(placement: Placement) -> int:
    """Keras' progress output: a live bar on a terminal, one line per epoch in a log, none off the chief."""
    if not placement.is_chief:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _batches(
    dataset: ImageDataset, config: TrainConfig, seed: int, placement: Placement, pseudo: PseudoLabels | None
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The training batches: one pipeline, or each replica's rows of the same global batches. Pseudo-classes
    are read from their table as batches are made, so re-clustering reaches the next epoch."""
    table = pseudo.table if pseudo is not None else None

    def batches_of(rows: int) -> tf.data.Dataset:
        return make_tf_dataset(dataset, rows, seed=seed, with_labels=config.conditional, label_table=table)

    if not placement.distributed:
        return batches_of(config.batch_size)
    make_tf_dataset(dataset, config.batch_size, seed=seed)  # refuses a global batch larger than the data
    return distribute_batches(placement, batches_of, config.batch_size, len(dataset))


def _sample_quality(config: TrainConfig, dataset: ImageDataset) -> list[SampleQuality]:
    """The periodic small-N FID check, if asked for and if the model is a GAN and the data labelled."""
    if not config.eval_every:
        return []
    if not config.is_gan or dataset.labels is None:
        raise ValueError(
            "eval_every scores GAN samples with a classifier of the dataset's labels: use it with dcgan or "
            f"cdcgan on labelled data (model {config.model!r}, dataset {dataset.name!r})"
        )
    return [
        SampleQuality(
            dataset,
            config.eval_every,
            config.eval_samples,
            latent_dim=config.latent_dim,
            seed=config.seed or 0,
        )
    ]


def _training_classes(
    config: TrainConfig, dataset: ImageDataset, run_dir: Path, placement: Placement
) -> tuple[ImageDataset, PseudoLabels | None]:
    """The images with the classes the model trains on: the dataset's labels, or pseudo-classes found in the
    images alone (the labels dropped; a resumed run's last ones from its folder)."""
    if not config.pseudo_classes:
        return dataset, None
    if config.recluster_every and placement.distributed:
        raise ValueError("recluster_every trains on one device: drop --distribute or --recluster-every")
    found = pseudo_classes(dataset.images, config.pseudo_classes, config.seed or 0)
    labels = PseudoLabels.resumed_or_new(found, run_dir) if config.resume else PseudoLabels(found, run_dir)
    relabelled = ImageDataset(dataset.name, dataset.images, labels.labels, found.names)
    return relabelled, labels


def _num_classes(config: TrainConfig, dataset: ImageDataset) -> int | None:
    """The class count a conditional model needs; None for unconditional ones."""
    if not config.conditional:
        return None
    if dataset.labels is None or not dataset.class_names:
        raise ValueError(
            f"model {config.model!r} needs class labels, and dataset {dataset.name!r} has none: use mnist, "
            "fashion_mnist, shapes, a folder with one subfolder per class, or an npz with labels"
        )
    return len(dataset.class_names)


def _load(config: TrainConfig) -> ImageDataset:
    dataset = load_dataset(
        config.dataset,
        data_path=config.data_path,
        image_size=config.image_size,
        channels=config.channels,
        limit=config.limit,
        seed=config.seed or 0,
    )
    logger.info("dataset %s: %d images of shape %s", dataset.name, len(dataset), dataset.image_shape)
    return dataset


def _data_seed(seed: int | None) -> int:
    return seed if seed is not None else random.randrange(2**31)


def _starting_epoch(config: TrainConfig, info: RunInfo, checkpointer: Checkpointer) -> int:
    """0 for a fresh run; the checkpointed epoch when resuming. Refuses to overwrite a run by accident."""
    if checkpointer.latest is None:
        if config.resume:
            logger.info("no checkpoint in %s yet; starting from scratch", config.run_path)
        return 0
    if not config.resume:
        raise ValueError(
            f"run folder {str(config.run_path)!r} already holds checkpoints: pass --resume to continue it, or "
            "--run-dir (or another --name) for a fresh run"
        )
    _check_same_architecture(read_run_info(config.run_path), info)
    return checkpointer.restore_latest()


def _check_same_architecture(saved: RunInfo, current: RunInfo) -> None:
    def shape(info: RunInfo) -> tuple[Any, ...]:
        config = info.config
        return (
            config.model,
            config.latent_dim,
            info.image_shape,
            config.ema_decay > 0.0,
            config.spectral_norm,
            config.d_width,
            config.conditioning,
        )

    if shape(saved) != shape(current):
        raise ValueError(
            "cannot resume: the run was (model, latent_dim, image_shape, ema, spectral_norm, d_width, "
            f"conditioning) = {shape(saved)} but the options now give {shape(current)}; resume with the "
            "original options or start a new --run-dir"
        )


def _fit(
    gan: GenerativeModel,
    data: tf.data.Dataset | tf.distribute.DistributedDataset,
    config: TrainConfig,
    initial_epoch: int,
    callbacks: list[keras.callbacks.Callback],
    checkpointer: Checkpointer,
    placement: Placement,
) -> None:
    fit_epochs(
        gan,
        data,
        placement,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        save_on_interrupt=lambda: checkpointer.save(int(checkpointer.epoch)),
        verbose=_verbosity(placement),
    )


def _publish_scaled(config: TrainConfig, publish: Callable[..., Path]) -> Path:
    """`publish(store=, latent_scale=)` into the run's store at its latent scale, picking it first if "auto"."""
    scale = config.latent_scale
    if scale == AUTO_LATENT_SCALE:
        scale = pick_latent_scale(
            lambda store: publish(store=store, latent_scale=1.0),
            dataset=config.dataset,
            data_path=config.data_path,
            num_samples=config.eval_samples,
            seed=(config.seed or 0) + 1,  # not the latents the quality check picked the epoch with
        )
    return publish(store=config.store, latent_scale=float(scale))


def _check_latent_scale_search(config: TrainConfig, dataset: ImageDataset) -> None:
    """Fail before training, not after it, when `--latent-scale auto` could not score the result."""
    if config.latent_scale == AUTO_LATENT_SCALE and config.export and dataset.labels is None:
        raise ValueError(
            f"latent_scale {AUTO_LATENT_SCALE!r} scores samples with a classifier of the dataset's labels, and "
            f"{dataset.name!r} has none: give a number instead"
        )


def _export(
    gan: GenerativeModel,
    info: RunInfo,
    epochs_completed: int,
    summary: dict[str, Any],
    placement: Placement,
    prior: LatentFlow | None = None,
    *,
    store: Path,
    latent_scale: float = 1.0,
) -> Path:
    averaged = info.config.export_ema and gan.ema_generator is not None
    generator = gan.ema_generator if averaged and gan.ema_generator is not None else gan.generator
    metadata = build_metadata(
        info,
        epochs=epochs_completed,
        averaged=averaged,
        summary=summary,
        latent_scale=latent_scale,
        unconditional=info.config.pseudo_classes > 0,
    )
    encoder = gan.encoder if isinstance(gan, VAE) else None
    if placement.distributed:
        generator = detached_copy(generator)
        encoder = detached_copy(encoder) if encoder is not None else None
    return export_generator(generator, metadata, store, encoder=encoder, prior=prior, sound=info.sound)
