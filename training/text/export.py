"""Publish a trained char-rnn to the model store: `step`, `initial_state` and the in-graph `serving_default`."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from genserve.store import ModelKind, ModelMetadata, TextInfo, publish_version
from training.provenance import portable_dataset, portable_options
from training.text.config import TextTrainConfig
from training.text.data import TextCorpus, data_location
from training.text.model import CharRnnServer

KIND: ModelKind = "char-rnn"


def publish_char_rnn(
    model: keras.Model,
    config: TextTrainConfig,
    corpus: TextCorpus,
    *,
    epochs: int,
    summary: dict[str, Any],
    distribution: dict[str, Any] | None = None,
) -> Path:
    """Write the model as the next version of `config.name` in `config.store`; returns its folder.

    `distribution` (`training.distribute.Placement.describe`) goes into ``training_config["distribution"]``,
    as for image models. The model's variables must belong to no strategy (`training.distribute.detached_copy`).
    """
    server = CharRnnServer(
        model, corpus.vocabulary, cell=config.cell, layers=config.layers, units=config.units
    )
    metadata = ModelMetadata(
        name=config.name,
        kind=KIND,
        text=TextInfo(
            vocabulary=corpus.vocabulary,
            state_size=server.state_size,
            end_of_text=corpus.vocabulary[0],
            cell=config.cell,
            layers=config.layers,
            units=config.units,
            sequence_length=config.sequence_length,
        ),
        dataset=portable_dataset(config.dataset),
        training_config={
            **portable_options(config.to_json(), data_location(config.dataset, config.data_path)),
            **({"distribution": distribution} if distribution else {}),
        },
        epochs=epochs,
        seed=config.seed,
        framework_versions={
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
        training_summary=summary,
    )

    def write_model(folder: Path) -> None:
        tf.saved_model.save(server, str(folder), signatures=server.signatures())

    return publish_version(config.store, metadata, write_model)
