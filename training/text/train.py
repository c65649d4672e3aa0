"""`train_text(config)`: read the text, fit the network, publish it, score it.

Truncated backpropagation through time uses stateless fixed windows: the id stream is cut into
non-overlapping windows of `sequence_length` characters, each trained from a zero state. Windows can then be
shuffled freely and batched in any order (a carried, stateful state would tie each batch row to one stretch
of text and forbid shuffling), resuming needs no saved state, and the last partial batch needs no special
case. The cost is that the model never learns dependencies longer than a window, which for character-level
text of a few hundred characters per document is little loss. At serving time the state is simply carried
on past the window length.

Under ``--distribute`` (`training.distribute`, as for the image models) the windows of each global batch
are split over the replicas, each worker reading only its own replicas' rows, and `training.text.replicas`
holds the step they take.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from genserve import store
from genserve.store import TextEvaluationRecord
from training import distribute
from training.run import fit_epochs, seed_everything
from training.run_folder import HISTORY_FILE, RUN_INFO_FILE, SAMPLES_DIR
from training.text.callbacks import CosineLearningRate, TextCheckpoint, TextSamples, TimeLimit
from training.text.config import CHECKPOINT_EPOCH_FILE, CHECKPOINT_FILE, TextTrainConfig
from training.text.data import TextCorpus, load_corpus, windows
from training.text.evaluate import NGramModel, evaluation_record, model_bits, unigram_bits, write_record
from training.text.export import publish_char_rnn
from training.text.model import build_char_rnn
from training.text.replicas import CharRnnTrainer, HeldOutLoss

logger = logging.getLogger(__name__)


def train_text(config: TextTrainConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> Path | None:
    """Train as configured and return the published version folder (None when `config.export` is off).

    `callbacks` run after the built-in ones (samples, checkpoint, history). With ``distribute`` set
    (`training.distribute`) the network is built under the strategy and trained on every replica by
    `fit_replicas`; every worker resumes from the chief's checkpoint, and the chief alone publishes, once,
    and scores the version. A non-chief worker of a multi-worker run returns None and removes its own folder.
    """
    placement = distribute.make_placement(config.distribute)
    seed_everything(config.seed)
    seed = _data_seed(config.seed, placement)
    corpus = load_corpus(
        config.dataset,
        data_path=config.data_path,
        held_out=config.held_out,
        seed=seed,
        limit_chars=config.limit_chars,
    )
    distribution = placement.describe(config.batch_size)
    distribute.log_distribution(distribution)
    run_dir = placement.run_dir(config.run_folder)
    _write_run_info(run_dir, config, corpus, distribution)
    with placement.strategy.scope():
        model, initial_epoch = _model(config, corpus, config.run_folder)
        if placement.distributed:
            model.optimizer.build(model.trainable_variables)  # its slots, under the strategy
    started = time.perf_counter()
    if placement.distributed:
        history = _fit_replicas(model, config, corpus, initial_epoch, placement, seed, callbacks)
    else:
        history = _fit(model, config, corpus, run_dir, initial_epoch, placement, callbacks)
    epochs = _epochs_checkpointed(run_dir, initial_epoch)
    summary = {"wall_s": round(time.perf_counter() - started, 1), "epochs_run": epochs - initial_epoch}
    if not placement.is_chief:
        distribute.remove_worker_folder(placement, config.run_folder)
        return None
    if not config.export:
        return None
    # The copy carries the weights alone: no strategy, and no optimizer state into the SavedModel.
    network = distribute.detached_copy(model)
    return _publish(network, config, corpus, placement, epochs, {**summary, **history})


def _write_run_info(
    run_dir: Path, config: TextTrainConfig, corpus: TextCorpus, distribution: dict[str, Any]
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {**config.to_json(), "vocabulary": corpus.vocabulary, "distribution": distribution}
    (run_dir / RUN_INFO_FILE).write_text(json.dumps(info, indent=2))


def _publish(
    network: keras.Model,
    config: TextTrainConfig,
    corpus: TextCorpus,
    placement: distribute.Placement,
    epochs: int,
    summary: dict[str, Any],
) -> Path:
    """Publish the version (once per multi-worker run) and write its evaluation.json, unless it has one."""

    def publish() -> Path:
        distribution = placement.describe(config.batch_size)
        return publish_char_rnn(
            network, config, corpus, epochs=epochs, summary=summary, distribution=distribution
        )

    version = distribute.publish_once(placement, config.run_folder, epochs, publish)
    if store.read_text_evaluation(version) is None:  # a chief restarted after publishing may have scored it
        record = score(network, corpus, config.dataset, config.sequence_length)
        write_record(version, record)
        logger.info("published %s: held-out %.3f bits/char", version, record.bits_per_char)
    return version


def score(model: keras.Model, corpus: TextCorpus, dataset: str, sequence_length: int) -> TextEvaluationRecord:
    """The evaluation record of `model` on the corpus' held-out documents, beside the baselines."""
    train_ids, held_out_ids = corpus.train_ids, corpus.held_out_ids
    size = len(corpus.vocabulary)
    rnn = model_bits(lambda ids: model(ids, training=False).numpy(), held_out_ids, sequence_length)
    return evaluation_record(
        dataset,
        rnn,
        unigram_bits(train_ids, held_out_ids, size),
        NGramModel(train_ids, size).bits_per_char(held_out_ids),
        held_out_chars=len(held_out_ids) - 1,
        train_chars=len(train_ids) - 1,
    )


def _epochs_checkpointed(run_dir: Path, initial_epoch: int) -> int:
    """The epochs the run's checkpoint holds: all of them, or fewer when its time budget stopped it."""
    epoch_file = run_dir / CHECKPOINT_EPOCH_FILE
    return int(json.loads(epoch_file.read_text())["epochs"]) if epoch_file.is_file() else initial_epoch


def _data_seed(seed: int | None, placement: distribute.Placement) -> int | None:
    """The seed of the held-out split and of the window order: under a strategy, one that every worker shares
    (the chief's draw, for an unseeded run), so all hold out the same text and shuffle it alike."""
    if seed is not None or not placement.distributed:
        return seed
    return distribute.chief_value(placement, random.randrange(2**31))


def _model(config: TextTrainConfig, corpus: TextCorpus, run_dir: Path) -> tuple[keras.Model, int]:
    """A fresh compiled model, or the checkpoint's (weights and optimizer) when resuming."""
    checkpoint, epoch_file = run_dir / CHECKPOINT_FILE, run_dir / CHECKPOINT_EPOCH_FILE
    if config.resume and checkpoint.is_file():
        saved = json.loads(epoch_file.read_text())
        if saved["architecture"] != config.architecture() or saved["vocabulary"] != corpus.vocabulary:
            raise ValueError(
                f"the checkpoint in {run_dir} has another architecture or vocabulary; drop --resume or use a new run folder"
            )
        logger.info("resuming %s after epoch %d", run_dir, saved["epochs"])
        return keras.models.load_model(checkpoint), int(saved["epochs"])
    model = build_char_rnn(
        len(corpus.vocabulary),
        cell=config.cell,
        layers=config.layers,
        units=config.units,
        embedding_dim=config.embedding_dim,
        dropout=config.dropout,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr, global_clipnorm=config.clip_norm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, 0


def _dataset(
    ids: np.ndarray,
    config: TextTrainConfig,
    *,
    shuffle: bool,
    seed: int | None = None,
    rows: int | None = None,
) -> tf.data.Dataset:
    """Batches of `rows` windows (the batch size by default), reshuffled by `seed` every epoch if asked."""
    chunks = windows(ids, config.sequence_length)
    data = tf.data.Dataset.from_tensor_slices(chunks)
    if shuffle:
        data = data.shuffle(len(chunks), seed=seed, reshuffle_each_iteration=True)
    batch = config.batch_size if rows is None else rows
    return data.batch(batch).map(lambda chunk: (chunk[:, :-1], chunk[:, 1:])).prefetch(2)


def _held_out(config: TextTrainConfig, corpus: TextCorpus) -> tf.data.Dataset | None:
    """The held-out batches of the per-epoch validation, when the held-out text fills a window."""
    enough = len(corpus.held_out_ids) > config.sequence_length + 1
    return _dataset(corpus.held_out_ids, config, shuffle=False) if enough else None


def _fit(
    model: keras.Model,
    config: TextTrainConfig,
    corpus: TextCorpus,
    run_dir: Path,
    initial_epoch: int,
    placement: distribute.Placement,
    extra: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    if initial_epoch >= config.epochs:
        return {}
    train = _dataset(corpus.train_ids, config, shuffle=True, seed=config.seed)
    checkpoint = TextCheckpoint(model, run_dir, config, corpus, initial_epoch)
    budget = _time_budget(config)
    steps_per_epoch = math.ceil(len(windows(corpus.train_ids, config.sequence_length)) / config.batch_size)
    callbacks = [
        *_schedule(config, steps_per_epoch * (config.epochs - initial_epoch)),
        TextSamples(model, config, corpus, run_dir / SAMPLES_DIR),
        checkpoint,
        _history_csv(run_dir, initial_epoch),
        *budget,
        *extra,
    ]
    history = fit_epochs(
        model,
        train,
        placement,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        save_on_interrupt=checkpoint.save_completed,
        verbose=2,
        validation_data=_held_out(config, corpus),
    )
    return _write_history(history.history if history is not None else {}, run_dir, budget)


def _fit_replicas(
    model: keras.Model,
    config: TextTrainConfig,
    corpus: TextCorpus,
    initial_epoch: int,
    placement: distribute.Placement,
    seed: int | None,
    extra: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """`_fit` under a strategy: each replica trains on its rows of every global batch (`fit_replicas`).

    Every worker checkpoints, as for the image models (a save that reads a variable kept in sync across
    workers needs them all), the others into their own folders; the chief alone samples, validates and
    records the history.
    """
    if initial_epoch >= config.epochs:
        return {}
    examples = len(windows(corpus.train_ids, config.sequence_length))
    if examples < config.batch_size:
        raise ValueError(
            f"the training text makes {examples} windows of {config.sequence_length} characters, fewer than "
            f"one global batch of {config.batch_size}: lower --batch-size or --sequence-length"
        )

    def batches_of(rows: int) -> tf.data.Dataset:
        return _dataset(corpus.train_ids, config, shuffle=True, seed=seed, rows=rows)

    batches = distribute.distribute_batches(placement, batches_of, config.batch_size, examples)
    with placement.strategy.scope():
        trainer = CharRnnTrainer(model, config.clip_norm)
    run_dir, history = placement.run_dir(config.run_folder), keras.callbacks.History()
    checkpoint = TextCheckpoint(model, run_dir, config, corpus, initial_epoch)
    budget = _time_budget(config)
    steps = math.ceil(examples / config.batch_size) * (config.epochs - initial_epoch)
    callbacks: list[keras.callbacks.Callback] = [*_schedule(config, steps), checkpoint, history, *budget]
    if placement.is_chief:
        held_out = _held_out(config, corpus)
        # Validation writes val_loss into the epoch's logs, so it runs before the others record them.
        validation = [HeldOutLoss(model, held_out)] if held_out is not None else []
        samples = TextSamples(model, config, corpus, run_dir / SAMPLES_DIR)
        callbacks = [*validation, samples, *callbacks, _history_csv(run_dir, initial_epoch)]
    fit_epochs(
        trainer,
        batches,
        placement,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=[*callbacks, *extra],
        save_on_interrupt=checkpoint.save_completed,
        verbose=2 if placement.is_chief else 0,
    )
    return _write_history(history.history, run_dir, budget) if placement.is_chief else {}


def _history_csv(run_dir: Path, initial_epoch: int) -> keras.callbacks.CSVLogger:
    return keras.callbacks.CSVLogger(
        str(run_dir / HISTORY_FILE.replace(".json", ".csv")), append=initial_epoch > 0
    )


def _schedule(config: TextTrainConfig, total_steps: int) -> list[CosineLearningRate]:
    """The learning-rate schedule's callback, if the run has one: over its time budget, else its steps."""
    if config.lr_schedule == "constant":
        return []
    if config.time_budget is not None:
        return [CosineLearningRate(config.lr, seconds=config.time_budget * 60)]
    return [CosineLearningRate(config.lr, total_steps=total_steps)]


def _time_budget(config: TextTrainConfig) -> list[TimeLimit]:
    return [TimeLimit(config.time_budget)] if config.time_budget is not None else []


def _write_history(history: dict[str, list[Any]], run_dir: Path, budget: list[TimeLimit]) -> dict[str, Any]:
    """history.json of this session's epochs, and the last losses for the version's summary."""
    losses = {key: [round(float(v), 4) for v in values] for key, values in history.items()}
    (run_dir / HISTORY_FILE).write_text(json.dumps(losses, indent=2))
    return {
        "final_loss": losses.get("loss", [None])[-1],
        "final_val_loss": losses.get("val_loss", [None])[-1],
        "stopped_on_time_budget": any(callback.exhausted for callback in budget),
    }
