"""A loaded text generator: its `step` and `initial_state` signatures (blocking; runs on a worker thread)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from app.serving.runtime import (
    DeviceInfo,
    ModelLoadError,
    load_saved_model,
    read_metadata,
    read_optional_record,
)
from genserve import store
from genserve.store import TextInfo
from genserve.text import vocabulary_index


class TextRuntime:
    """`step(token_ids [B], state [B, S]) -> (logits [B, V], state [B, S])` of a char-rnn version."""

    def __init__(self, path: Path, device: DeviceInfo) -> None:
        self.path = Path(path)
        self.device = device
        self.metadata = read_metadata(self.path)
        if self.metadata.text is None:
            raise ModelLoadError(f"{store.METADATA_FILE} in {path} describes no text generator")
        self.text: TextInfo = self.metadata.text
        self.evaluation = read_optional_record(self.path, store.read_text_evaluation)
        self.index = vocabulary_index(self.text.vocabulary)
        self._saved_model = load_saved_model(self.path, device)
        self._step = _signature(self._saved_model, store.STEP_SIGNATURE, self.path)
        self._initial_state = _signature(self._saved_model, store.INITIAL_STATE_SIGNATURE, self.path)

    @property
    def vocabulary(self) -> list[str]:
        return self.text.vocabulary

    @property
    def vocabulary_size(self) -> int:
        return len(self.text.vocabulary)

    def initial_state(self, batch_size: int) -> np.ndarray:
        import tensorflow as tf

        with tf.device(self.device.name):
            outputs = self._initial_state(**{store.BATCH_SIZE_INPUT: tf.constant(batch_size, tf.int32)})
        return np.asarray(outputs[store.STATE_OUTPUT].numpy(), dtype=np.float32)

    def step(self, token_ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        with tf.device(self.device.name):
            outputs = self._step(
                **{
                    store.TOKEN_IDS_INPUT: tf.constant(token_ids, tf.int32),
                    store.STATE_INPUT: tf.constant(state, tf.float32),
                }
            )
        return outputs[store.LOGITS_OUTPUT].numpy(), outputs[store.STATE_OUTPUT].numpy()

    def warm_up(self, batch_sizes: list[int]) -> float:
        """One step per batch size, checking shapes against the metadata; returns seconds."""
        started = time.perf_counter()
        for size in batch_sizes:
            state = self.initial_state(size)
            logits, new_state = self.step(np.zeros(size, np.int32), state)
            expected = ((size, self.vocabulary_size), (size, self.text.state_size))
            if (logits.shape, new_state.shape, state.shape) != (*expected, expected[1]):
                raise ModelLoadError(
                    f"step returned logits {logits.shape} and state {new_state.shape}; metadata promises {expected}"
                )
        return time.perf_counter() - started


def _signature(saved_model: Any, name: str, path: Path) -> Any:
    signature = saved_model.signatures.get(name)
    if signature is None:
        raise ModelLoadError(f"SavedModel in {path} has no {name!r} signature")
    return signature
