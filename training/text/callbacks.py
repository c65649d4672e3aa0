"""What a char-rnn run writes after every epoch: seeded samples from the in-graph sampler, and the checkpoint
`--resume` reads (also on Ctrl-C)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
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


class CosineLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every batch: a short linear warm-up to `peak`, then a half
    cosine down to `peak * floor` at the run's end.

    The end is `seconds` of wall time after the start when the run has a time budget (its length is known in
    seconds, not in steps), else `total_steps` batches.
    """

    def __init__(
        self,
        peak: float,
        *,
        seconds: float | None = None,
        total_steps: int | None = None,
        floor: float = 0.1,
        warmup_steps: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if (seconds is None) == (total_steps is None):
            raise ValueError("give the run's length as seconds or as total_steps, not both")
        self.peak, self.floor, self.warmup_steps = peak, floor, warmup_steps
        self._seconds, self._total_steps, self._clock = seconds, total_steps, clock
        self._started = 0.0
        self._step = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = self._clock()

    def rate(self, progress: float) -> float:
        """The learning rate at `progress` (0 at the start, 1 at the end) after the warm-up."""
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.peak * (self.floor + (1.0 - self.floor) * cosine)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._seconds is not None:
            progress = (self._clock() - self._started) / self._seconds
        else:
            assert self._total_steps is not None
            progress = self._step / max(self._total_steps, 1)
        warmup = min(1.0, (self._step + 1) / self.warmup_steps)
        self.model.optimizer.learning_rate.assign(self.rate(progress) * warmup)
        self._step += 1


class TimeLimit(keras.callbacks.Callback):
    """Stop at the first batch that ends `minutes` after the start of training: an epoch of text can be long
    next to a budget, so the run stops inside it and the epoch's end (checkpoint, validation, samples) follows."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if not minutes > 0:
            raise ValueError(f"a time budget must be a positive number of minutes, got {minutes}")
        self.seconds = minutes * 60
        self.exhausted = False
        self._clock = clock
        self._started = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = self._clock()
        self.exhausted = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._clock() - self._started >= self.seconds:
            self.exhausted = True
            self.model.stop_training = True
