"""The run skeleton both trainers share: seeding, Ctrl-C checkpoints, and time budgets, on the char-rnn
trainer (the image trainer's own tests are in `test_train.py` and `test_progress.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from genserve.store import read_metadata
from tests.training.runs import InterruptAt
from tests.training.text.tiny import tiny_text_config
from training.run import TimeBudget
from training.text.config import CHECKPOINT_EPOCH_FILE, CHECKPOINT_FILE
from training.text.train import train_text

SMALL = {"export": False, "limit_chars": 2_000, "units": 16}


def _weights(checkpoint: Path) -> list[np.ndarray]:
    return [np.asarray(weight) for weight in keras.models.load_model(checkpoint).get_weights()]


def test_ctrl_c_in_a_text_run_saves_a_checkpoint_that_resume_picks_up(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tiny_text_config(tmp_path / "store", run_dir, **{**SMALL, "epochs": 2})

    with pytest.raises(KeyboardInterrupt):
        train_text(config, callbacks=[InterruptAt(epoch=1)])

    # Saved mid-epoch, counted as the one epoch completed.
    assert json.loads((run_dir / CHECKPOINT_EPOCH_FILE).read_text())["epochs"] == 1
    optimizer = keras.models.load_model(run_dir / CHECKPOINT_FILE).optimizer
    assert int(optimizer.iterations.numpy()) > 0
    resumed = tiny_text_config(tmp_path / "store", run_dir, **{**SMALL, "epochs": 2, "resume": True})
    assert train_text(resumed) is None
    assert json.loads((run_dir / CHECKPOINT_EPOCH_FILE).read_text())["epochs"] == 2


def test_a_seeded_text_run_gives_the_same_weights_every_time(tmp_path: Path) -> None:
    runs = [tmp_path / "first", tmp_path / "second"]
    for run_dir in runs:
        train_text(tiny_text_config(tmp_path / "store", run_dir, **{**SMALL, "epochs": 1, "seed": 7}))
    first, second = (_weights(run_dir / CHECKPOINT_FILE) for run_dir in runs)

    assert len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other = tmp_path / "other-seed"
    train_text(tiny_text_config(tmp_path / "store", other, **{**SMALL, "epochs": 1, "seed": 8}))
    assert not np.array_equal(_weights(other / CHECKPOINT_FILE)[0], first[0])


def test_a_text_run_stops_on_its_time_budget_and_still_publishes(tmp_path: Path) -> None:
    # A budget of 0.06 s is used up by the first epoch, whatever the machine.
    config = tiny_text_config(
        tmp_path / "store", tmp_path / "run", **{**SMALL, "export": True, "epochs": 5, "time_budget": 0.001}
    )

    version = train_text(config)

    assert version is not None
    assert json.loads((tmp_path / "run" / CHECKPOINT_EPOCH_FILE).read_text())["epochs"] == 1
    metadata = read_metadata(version)
    assert metadata.epochs == 1 and metadata.training_summary["stopped_on_time_budget"] is True


def test_a_text_time_budget_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive number of minutes"):
        tiny_text_config(tmp_path / "store", tmp_path / "run", time_budget=0.0)


def test_time_budget_stops_before_an_epoch_that_would_overrun_it() -> None:
    # Epochs of 10 s, every other one 4 s longer (a quality check), against a 50 s budget: after epoch 3
    # (34 s) another epoch of up to 14 s still fits; after epoch 4 (48 s) one would end past the budget.
    clock = iter([0.0, 10.0, 24.0, 34.0, 48.0, 58.0])
    budget = TimeBudget(50 / 60, clock=lambda: next(clock))
    budget.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    budget.on_train_begin()

    stopped_after = None
    for epoch in range(5):
        budget.on_epoch_end(epoch)
        if budget.exhausted:
            stopped_after = epoch + 1
            break

    assert stopped_after == 4 and budget.model.stop_training


def test_time_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive number of minutes"):
        TimeBudget(0.0)
