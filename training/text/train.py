"""`train_text(config)`: read the text, fit the network, publish it, score it.

Truncated backpropagation through time uses stateless fixed windows: the id stream is cut into
non-overlapping windows of `sequence_length` characters, each trained from a zero state. Windows can then be
shuffled freely and batched in any order (a carried, stateful state would tie each batch row to one stretch
of text and forbid shuffling), resuming needs no saved state, and the last partial batch needs no special
case. The cost is that the model never learns dependencies longer than a window, which for character-level
text of a few hundred characters per document is little loss. At serving time the state is simply carried
on past the window length.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from genserve.store import TextEvaluationRecord
from training.text.config import (
    CHECKPOINT_EPOCH_FILE,
    CHECKPOINT_FILE,
    HISTORY_FILE,
    RUN_INFO_FILE,
    SAMPLES_DIR,
    TextTrainConfig,
)
from training.text.data import TextCorpus, load_corpus, windows
from training.text.evaluate import NGramModel, evaluation_record, model_bits, unigram_bits, write_record
from training.text.export import publish_char_rnn
from training.text.model import CharRnnServer, build_char_rnn

logger = logging.getLogger(__name__)

# Prompts of the per-epoch samples: the empty one shows how documents start.
SAMPLE_PROMPTS = ("", "The ")


def train_text(config: TextTrainConfig) -> Path | None:
    """Train as configured and return the published version folder (None when `config.export` is off)."""
    _seed_everything(config.seed)
    corpus = load_corpus(
        config.dataset,
        data_path=config.data_path,
        held_out=config.held_out,
        seed=config.seed,
        limit_chars=config.limit_chars,
    )
    run_dir = config.run_folder
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_INFO_FILE).write_text(
        json.dumps({**config.to_json(), "vocabulary": corpus.vocabulary}, indent=2)
    )
    model, initial_epoch = _model(config, corpus, run_dir)
    started = time.perf_counter()
    history = _fit(model, config, corpus, run_dir, initial_epoch)
    summary = {"wall_s": round(time.perf_counter() - started, 1), "epochs_run": config.epochs - initial_epoch}
    if not config.export:
        return None
    version = publish_char_rnn(model, config, corpus, epochs=config.epochs, summary={**summary, **history})
    record = score(model, corpus, config.dataset, config.sequence_length)
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


def _seed_everything(seed: int | None) -> None:
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        tf.random.set_seed(seed)


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


def _dataset(ids: np.ndarray, config: TextTrainConfig, *, shuffle: bool) -> tf.data.Dataset:
    chunks = windows(ids, config.sequence_length)
    data = tf.data.Dataset.from_tensor_slices(chunks)
    if shuffle:
        data = data.shuffle(len(chunks), seed=config.seed, reshuffle_each_iteration=True)
    return data.batch(config.batch_size).map(lambda chunk: (chunk[:, :-1], chunk[:, 1:])).prefetch(2)


def _fit(
    model: keras.Model, config: TextTrainConfig, corpus: TextCorpus, run_dir: Path, initial_epoch: int
) -> dict[str, Any]:
    if initial_epoch >= config.epochs:
        return {}
    train = _dataset(corpus.train_ids, config, shuffle=True)
    enough = len(corpus.held_out_ids) > config.sequence_length + 1
    held_out = _dataset(corpus.held_out_ids, config, shuffle=False) if enough else None
    callbacks = [
        TextSamples(model, config, corpus, run_dir / SAMPLES_DIR),
        TextCheckpoint(run_dir, config, corpus),
        keras.callbacks.CSVLogger(
            str(run_dir / HISTORY_FILE.replace(".json", ".csv")), append=initial_epoch > 0
        ),
    ]
    history = model.fit(
        train,
        validation_data=held_out,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        shuffle=False,  # the dataset reshuffles its windows every epoch
        verbose=2,
    )
    losses = {key: [round(float(v), 4) for v in values] for key, values in history.history.items()}
    (run_dir / HISTORY_FILE).write_text(json.dumps(losses, indent=2))
    return {
        "final_loss": losses.get("loss", [None])[-1],
        "final_val_loss": losses.get("val_loss", [None])[-1],
    }


class TextSamples(keras.callbacks.Callback):
    """After every epoch, a few seeded samples from the in-graph sampler (what TF Serving would answer)."""

    def __init__(self, model: keras.Model, config: TextTrainConfig, corpus: TextCorpus, folder: Path) -> None:
        super().__init__()
        self._server = CharRnnServer(
            model, corpus.vocabulary, cell=config.cell, layers=config.layers, units=config.units
        )
        self._length = config.sample_length
        self._folder = folder

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for prompt in SAMPLE_PROMPTS:
            for temperature in (0.5, 1.0):
                text = self._server.sample(
                    tf.constant(prompt),
                    tf.constant(self._length),
                    tf.constant(temperature),
                    tf.constant(0, tf.int64),
                )["text"]
                lines.append(
                    f"--- prompt {prompt!r}, temperature {temperature}, seed 0\n{prompt}{text.numpy().decode()}\n"
                )
        (self._folder / f"epoch_{epoch + 1:03d}.txt").write_text("\n".join(lines))


class TextCheckpoint(keras.callbacks.Callback):
    """The model and its optimizer after every epoch, with what `--resume` must check."""

    def __init__(self, run_dir: Path, config: TextTrainConfig, corpus: TextCorpus) -> None:
        super().__init__()
        self._file, self._epoch_file = run_dir / CHECKPOINT_FILE, run_dir / CHECKPOINT_EPOCH_FILE
        self._architecture, self._vocabulary = config.architecture(), corpus.vocabulary

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        partial = self._file.with_suffix(".partial.keras")
        self.model.save(partial)
        partial.replace(self._file)
        info = {"epochs": epoch + 1, "architecture": self._architecture, "vocabulary": self._vocabulary}
        self._epoch_file.write_text(json.dumps(info))
