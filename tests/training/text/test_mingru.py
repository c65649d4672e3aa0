"""The minimal GRU learns, resumes, and its exported `step` and `prefill` reproduce the trained network; every
cell's `prefill` reads prompts as the step does, whole or in chunks; the time limit and the cosine schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve import store
from tests.training.text.tiny import tiny_text_config
from training.text.callbacks import CosineLearningRate, TimeLimit
from training.text.config import CHECKPOINT_FILE
from training.text.train import train_text

IDS = np.array([[0, 5, 9, 3, 7, 1, 4, 2, 8], [0, 4, 4, 1, 0, 0, 0, 0, 0]], dtype=np.int32)
LENGTHS = np.array([9, 4], dtype=np.int32)


def _signatures(version: Path) -> Any:
    return tf.saved_model.load(str(version)).signatures


def _zero_state(signatures: Any, rows: int) -> tf.Tensor:
    return signatures[store.INITIAL_STATE_SIGNATURE](batch_size=tf.constant(rows))[store.STATE_OUTPUT]


def _prefill(signatures: Any, ids: np.ndarray, lengths: np.ndarray, state: tf.Tensor) -> dict[str, tf.Tensor]:
    return signatures[store.PREFILL_SIGNATURE](
        token_ids=tf.constant(ids), lengths=tf.constant(lengths), state=state
    )


@pytest.fixture(scope="module")
def mingru_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mingru")
    config = tiny_text_config(
        root / "store", root / "run", cell="mingru", layers=2, units=32, epochs=4, lr_schedule="cosine"
    )
    version = train_text(config)
    assert version is not None
    return version


def _checkpoint(version: Path) -> keras.Model:
    return keras.models.load_model(version.parents[1].parent / "run" / CHECKPOINT_FILE)


def test_a_mingru_learns_the_grammar(mingru_version: Path) -> None:
    record = store.read_text_evaluation(mingru_version)
    assert record is not None
    assert record.bits_per_char < record.details["unigram_bits_per_char"] - 1.0
    metadata = store.read_metadata(mingru_version)
    assert metadata.text is not None and metadata.text.cell == "mingru" and metadata.text.state_size == 64


def test_a_mingru_step_and_prefill_reproduce_the_trained_network(mingru_version: Path) -> None:
    expected = _checkpoint(mingru_version)(IDS, training=False).numpy()
    signatures = _signatures(mingru_version)
    state = _zero_state(signatures, 2)
    for position in range(IDS.shape[1]):
        outputs = signatures[store.STEP_SIGNATURE](token_ids=tf.constant(IDS[:, position]), state=state)
        state = outputs[store.STATE_OUTPUT]
        np.testing.assert_allclose(outputs[store.LOGITS_OUTPUT].numpy()[0], expected[0, position], atol=1e-4)
    read = _prefill(signatures, IDS, LENGTHS, _zero_state(signatures, 2))
    np.testing.assert_allclose(read[store.LOGITS_OUTPUT].numpy()[0], expected[0, 8], atol=1e-4)
    np.testing.assert_allclose(read[store.LOGITS_OUTPUT].numpy()[1], expected[1, 3], atol=1e-4)
    np.testing.assert_allclose(read[store.STATE_OUTPUT].numpy()[0], state.numpy()[0], atol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm", "mingru"])
def test_prefill_reads_a_prompt_whole_or_in_chunks_as_the_step_does(cell: str, tmp_path: Path) -> None:
    small = {"epochs": 1, "limit_chars": 2_000, "units": 16, "layers": 2, "cell": cell, "sample_length": 5}
    version = train_text(tiny_text_config(tmp_path / "store", tmp_path / "run", **small))
    assert version is not None
    signatures = _signatures(version)
    state = _zero_state(signatures, 2)
    for position in range(IDS.shape[1]):
        step = signatures[store.STEP_SIGNATURE](token_ids=tf.constant(IDS[:, position]), state=state)
        state = step[store.STATE_OUTPUT]
    whole = _prefill(signatures, IDS, np.array([9, 9], np.int32), _zero_state(signatures, 2))
    first = _prefill(signatures, IDS[:, :5], np.array([5, 5], np.int32), _zero_state(signatures, 2))
    rest = _prefill(signatures, IDS[:, 5:], np.array([4, 4], np.int32), first[store.STATE_OUTPUT])
    for read in (whole, rest):
        np.testing.assert_allclose(
            read[store.LOGITS_OUTPUT].numpy(), step[store.LOGITS_OUTPUT].numpy(), atol=1e-4
        )
        np.testing.assert_allclose(read[store.STATE_OUTPUT].numpy(), state.numpy(), atol=1e-4)
    # A row of length 0 keeps its state.
    empty = _prefill(signatures, IDS[:, :3], np.array([3, 0], np.int32), state)
    np.testing.assert_array_equal(empty[store.STATE_OUTPUT].numpy()[1], state.numpy()[1])


def test_a_mingru_run_resumes_from_its_checkpoint(mingru_version: Path, tmp_path: Path) -> None:
    model = _checkpoint(mingru_version)
    assert model.get_layer("rnn").state_size == 64
    model.save(tmp_path / "again.keras")
    again = keras.models.load_model(tmp_path / "again.keras")
    np.testing.assert_allclose(again(IDS).numpy(), model(IDS).numpy(), atol=1e-6)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Optimizer:
    def __init__(self) -> None:
        self.learning_rate = tf.Variable(0.0)


def test_the_cosine_schedule_warms_up_then_falls_to_its_floor_at_the_budget() -> None:
    clock = _Clock()
    schedule = CosineLearningRate(1e-2, seconds=100.0, warmup_steps=4, clock=clock)
    schedule.set_model(keras.Sequential())
    schedule.model.optimizer = _Optimizer()
    schedule.on_train_begin()
    rates = []
    for now in (100.0, 101.0, 102.0, 103.0, 150.0, 199.0, 400.0):
        clock.now = now
        schedule.on_train_batch_begin(0)
        rates.append(float(schedule.model.optimizer.learning_rate.numpy()))
    assert rates[0] == pytest.approx(1e-2 * 0.25, rel=1e-3)  # warm-up, a quarter of the way
    assert rates[3] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.03))), rel=1e-3)
    assert rates[4] == pytest.approx(1e-2 * 0.55, rel=1e-3)  # halfway through the budget
    assert rates[5] > rates[6] == pytest.approx(1e-3, rel=1e-3)  # the floor, and it stays there
    with pytest.raises(ValueError, match="not both"):
        CosineLearningRate(1e-2, seconds=1.0, total_steps=10)


def test_the_time_limit_stops_at_the_batch_that_reaches_it() -> None:
    clock = _Clock()
    limit = TimeLimit(1.0, clock=clock)
    limit.set_model(keras.Sequential())
    limit.on_train_begin()
    clock.now += 59.0
    limit.on_train_batch_end(0)
    assert not limit.exhausted and not getattr(limit.model, "stop_training", False)
    clock.now += 1.0
    limit.on_train_batch_end(1)
    assert limit.exhausted and limit.model.stop_training
