"""A tiny char-rnn learns, exports both kinds of signature, and its step graph is the trained network."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve import store
from genserve.store import ModelMetadata, TextInfo
from tests.training.text.tiny import TINY_TEXT_MODEL, tiny_text_config, tiny_text_run_dir
from training.text.cli import build_parser, config_from_args, train_main
from training.text.config import CHECKPOINT_EPOCH_FILE, CHECKPOINT_FILE, TextTrainConfig
from training.text.evaluate import NGramModel, evaluate_version, unigram_bits
from training.text.train import train_text


def test_model_beats_the_unigram_baseline_on_held_out_text(tiny_text_version: Path) -> None:
    record = store.read_text_evaluation(tiny_text_version)
    assert record is not None
    assert record.bits_per_char < record.details["unigram_bits_per_char"] - 1.0
    assert record.details["5gram_bits_per_char"] < record.details["unigram_bits_per_char"]


def test_metadata_describes_a_text_generator(tiny_text_version: Path) -> None:
    metadata = store.read_metadata(tiny_text_version)
    assert metadata.kind == "char-rnn" and metadata.is_text and metadata.text is not None
    assert metadata.text.vocabulary[store.END_OF_TEXT_ID] == metadata.text.end_of_text
    assert metadata.text.state_size == 64 and metadata.text.sequence_length == 32
    assert metadata.training_config["dataset"] == "grammar"


def test_export_has_step_initial_state_and_serving_default(tiny_text_version: Path) -> None:
    saved = tf.saved_model.load(str(tiny_text_version))
    assert {
        store.SIGNATURE_NAME,
        store.STEP_SIGNATURE,
        store.INITIAL_STATE_SIGNATURE,
        store.PREFILL_SIGNATURE,
    } <= set(saved.signatures)
    vocabulary = store.read_metadata(tiny_text_version).text.vocabulary  # type: ignore[union-attr]
    state = saved.signatures[store.INITIAL_STATE_SIGNATURE](batch_size=tf.constant(3))[store.STATE_OUTPUT]
    assert state.shape == (3, 64) and float(tf.reduce_sum(tf.abs(state))) == 0.0
    outputs = saved.signatures[store.STEP_SIGNATURE](token_ids=tf.constant([0, 1, 2]), state=state)
    assert outputs[store.LOGITS_OUTPUT].shape == (3, len(vocabulary))
    assert outputs[store.STATE_OUTPUT].shape == (3, 64)


def test_the_published_version_holds_the_weights_and_no_optimizer_state(tiny_text_version: Path) -> None:
    names = tf.train.list_variables(str(tiny_text_version / "variables" / "variables"))

    assert any("embedding" in name or "model" in name for name, _ in names)
    assert not [name for name, _ in names if "optimizer" in name]


def test_serving_default_samples_in_the_graph(tiny_text_version: Path) -> None:
    sample = tf.saved_model.load(str(tiny_text_version)).signatures[store.SIGNATURE_NAME]

    def run(prompt: str, seed: int, temperature: float = 1.0) -> str:
        outputs = sample(
            prompt=tf.constant(prompt),
            max_new_tokens=tf.constant(30),
            temperature=tf.constant(temperature),
            seed=tf.constant(seed, tf.int64),
        )
        return bytes(outputs[store.TEXT_OUTPUT].numpy()).decode()

    text = run("The cat ", seed=1)
    assert 0 < len(text) <= 30 and "\u241e" not in text
    assert run("The cat ", seed=1) == text
    assert run("The cat ", seed=0, temperature=0.0) == run("The cat ", seed=9, temperature=0.0)
    # Characters the model never saw are skipped, not an error.
    assert len(run("The cat \u00a7", seed=1)) > 0


def test_step_signature_reproduces_the_trained_network(tiny_text_version: Path, tmp_path: Path) -> None:
    run_dir = tiny_text_run_dir(tiny_text_version)
    model = keras.models.load_model(run_dir / CHECKPOINT_FILE)
    ids = np.array([[0, 5, 9, 3, 7, 1, 4]], dtype=np.int32)
    expected = model(ids, training=False).numpy()[0]
    saved = tf.saved_model.load(str(tiny_text_version))
    step = saved.signatures[store.STEP_SIGNATURE]
    state = saved.signatures[store.INITIAL_STATE_SIGNATURE](batch_size=tf.constant(1))[store.STATE_OUTPUT]
    for position, token in enumerate(ids[0]):
        outputs = step(token_ids=tf.constant([token]), state=state)
        state = outputs[store.STATE_OUTPUT]
        np.testing.assert_allclose(outputs[store.LOGITS_OUTPUT].numpy()[0], expected[position], atol=1e-4)


def test_evaluating_the_published_version_matches_the_training_score(tiny_text_version: Path) -> None:
    during_training = store.read_text_evaluation(tiny_text_version)
    record = evaluate_version(tiny_text_version)
    assert during_training is not None
    assert record.bits_per_char == pytest.approx(during_training.bits_per_char, abs=0.01)
    assert record.details["unigram_bits_per_char"] == during_training.details["unigram_bits_per_char"]


def test_samples_and_checkpoints_are_written_every_epoch(tiny_text_version: Path) -> None:
    run_dir = tiny_text_run_dir(tiny_text_version)
    assert sorted(p.name for p in (run_dir / "samples").iterdir())[-1] == "epoch_005.txt"
    assert json.loads((run_dir / CHECKPOINT_EPOCH_FILE).read_text())["epochs"] == 5
    assert "prompt 'The '" in (run_dir / "samples" / "epoch_001.txt").read_text()


def test_resume_continues_after_the_last_checkpoint(tmp_path: Path) -> None:
    small = {"epochs": 1, "export": False, "limit_chars": 2_000, "units": 16}
    run_dir = tmp_path / "run"
    assert train_text(tiny_text_config(tmp_path / "store", run_dir, **small)) is None
    resumed = tiny_text_config(tmp_path / "store", run_dir, **{**small, "epochs": 2, "resume": True})
    assert train_text(resumed) is None
    assert json.loads((run_dir / CHECKPOINT_EPOCH_FILE).read_text())["epochs"] == 2
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch_001.txt", "epoch_002.txt"]
    other = tiny_text_config(
        tmp_path / "store", run_dir, **{**small, "units": 32, "epochs": 3, "resume": True}
    )
    with pytest.raises(ValueError, match="another architecture"):
        train_text(other)


def test_ngram_baseline_is_a_distribution_and_beats_unigrams() -> None:
    train = np.tile(np.array([0, 1, 2, 3, 1, 2], np.int32), 50)
    model = NGramModel(train, vocabulary_size=5)
    for context in [(), (1,), (1, 2, 3, 1), (4, 4)]:
        assert sum(model.probability(context, token) for token in range(5)) == pytest.approx(1.0)
    held = np.tile(np.array([0, 1, 2, 3, 1, 2], np.int32), 5)
    assert model.bits_per_char(held) < unigram_bits(train, held, 5)


def test_image_metadata_still_needs_image_fields_and_text_metadata_needs_text() -> None:
    with pytest.raises(ValueError, match="latent_dim"):
        ModelMetadata(name="x", kind="dcgan", dataset="d", epochs=1)
    with pytest.raises(ValueError, match="text"):
        ModelMetadata(name="x", kind="char-rnn", dataset="d", epochs=1)
    info = TextInfo(vocabulary=["\u241e", "a"], state_size=4, units=4, sequence_length=8)
    assert ModelMetadata(name="x", kind="char-rnn", dataset="d", epochs=1, text=info).latent_dim == 0


def test_cli_fills_the_config_and_checks_it() -> None:
    args = build_parser().parse_args(
        ["train", "--dataset", "fortunes", "--name", "fortunes-rnn", "--cell", "lstm", "--units", "32"]
    )
    config = config_from_args(args)
    assert isinstance(config, TextTrainConfig) and config.cell == "lstm" and config.units == 32
    assert config.state_size == 2 * 2 * 32
    with pytest.raises(ValueError, match="dropout"):
        TextTrainConfig(dataset="grammar", name=TINY_TEXT_MODEL, dropout=1.5)


def test_train_main_accepts_the_model_flag_another_cli_passes_on(tmp_path: Path) -> None:
    status = train_main(
        [
            "--model",
            "char-rnn",
            "--dataset",
            "grammar",
            "--name",
            "cli-rnn",
            "--store",
            str(tmp_path / "store"),
            "--run-dir",
            str(tmp_path / "run"),
            "--units",
            "8",
            "--layers",
            "1",
            "--epochs",
            "1",
            "--sequence-length",
            "16",
            "--limit-chars",
            "2000",
            "--sample-length",
            "5",
        ]
    )
    assert status == 0
    assert store.read_metadata(tmp_path / "store" / "cli-rnn" / "1").kind == "char-rnn"
    assert train_main(["--dataset", "poetry", "--name", "x", "--run-dir", str(tmp_path / "bad")]) == 2


def test_an_lstm_exports_a_step_that_reproduces_it(tmp_path: Path) -> None:
    small = {"epochs": 1, "limit_chars": 2_000, "units": 16, "layers": 2, "cell": "lstm", "sample_length": 5}
    version = train_text(tiny_text_config(tmp_path / "store", tmp_path / "run", **small))
    assert version is not None
    metadata = store.read_metadata(version)
    assert metadata.text is not None and metadata.text.state_size == 2 * 2 * 16
    model = keras.models.load_model(tmp_path / "run" / CHECKPOINT_FILE)
    ids = np.array([[0, 3, 1, 4, 1, 5]], dtype=np.int32)
    expected = model(ids, training=False).numpy()[0]
    saved = tf.saved_model.load(str(version))
    state = saved.signatures[store.INITIAL_STATE_SIGNATURE](batch_size=tf.constant(1))[store.STATE_OUTPUT]
    for position, token in enumerate(ids[0]):
        outputs = saved.signatures[store.STEP_SIGNATURE](token_ids=tf.constant([token]), state=state)
        state = outputs[store.STATE_OUTPUT]
        np.testing.assert_allclose(outputs[store.LOGITS_OUTPUT].numpy()[0], expected[position], atol=1e-4)
