"""A tiny char-rnn trained in seconds on the procedural grammar, shared by the training and service tests."""

from __future__ import annotations

from pathlib import Path

from training.text.config import TextTrainConfig
from training.text.train import train_text

TINY_TEXT_MODEL = "grammar-rnn"


def tiny_text_run_dir(version: Path) -> Path:
    """Where the session's tiny text version (`model_store/<name>/<version>`) keeps its run: beside its store.
    The version's metadata names no run folder (it names no path of the machine that trained it)."""
    return version.parents[2] / "runs" / version.parent.name


def tiny_text_config(store: Path, run_dir: Path, **overrides: object) -> TextTrainConfig:
    values: dict[str, object] = {
        "dataset": "grammar",
        "name": TINY_TEXT_MODEL,
        "store": store,
        "run_dir": run_dir,
        "layers": 1,
        "units": 64,
        "embedding_dim": 16,
        "sequence_length": 32,
        "batch_size": 32,
        "epochs": 5,
        "lr": 1e-2,
        "dropout": 0.0,
        "limit_chars": 12_000,
        "sample_length": 40,
        "seed": 0,
        **overrides,
    }
    return TextTrainConfig(**values)  # type: ignore[arg-type]


def train_tiny_text(store: Path, run_dir: Path, **overrides: object) -> Path:
    """Train and publish the tiny model; returns its version folder."""
    version = train_text(tiny_text_config(store, run_dir, **overrides))
    if version is None:
        raise RuntimeError("training did not publish a version")
    return version
