"""What a char-rnn run writes after every epoch: seeded samples from the in-graph sampler, and the checkpoint
`--resume` reads (also on Ctrl-C)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.text.config import CHECKPOINT_EPOCH_FILE, CHECKPOINT_FILE, TextTrainConfig
from training.text.data import TextCorpus
from training.text.model import CharRnnServer

# Prompts of the per-epoch samples: the empty one shows how documents start.
SAMPLE_PROMPTS = ("", "The ")


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
    """The network and its optimizer after every epoch, with what `--resume` must check."""

    def __init__(
        self,
        network: keras.Model,
        run_dir: Path,
        config: TextTrainConfig,
        corpus: TextCorpus,
        initial_epoch: int = 0,
    ) -> None:
        super().__init__()
        self._network = network
        self._file, self._epoch_file = run_dir / CHECKPOINT_FILE, run_dir / CHECKPOINT_EPOCH_FILE
        self._architecture, self._vocabulary = config.architecture(), corpus.vocabulary
        self._completed = initial_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._completed = epoch + 1
        self.save_completed()

    def save_completed(self) -> Path:
        """The network as it is now, counted as the last completed epoch (on Ctrl-C: mid-epoch weights)."""
        self._file.parent.mkdir(parents=True, exist_ok=True)
        partial = self._file.with_suffix(".partial.keras")
        self._network.save(partial)
        partial.replace(self._file)
        info = {"epochs": self._completed, "architecture": self._architecture, "vocabulary": self._vocabulary}
        self._epoch_file.write_text(json.dumps(info))
        return self._file
