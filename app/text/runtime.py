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
from app.serving.signature_calls import signature_call
from genserve import store
from genserve.store import TextInfo
from genserve.text import vocabulary_index


class TextRuntime:
    """`step(token_ids [B], state [B, S]) -> (logits [B, V], state [B, S])` of a char-rnn version, and its
    `prefill` of whole prompts where the version has one."""

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
        on_cpu = device.kind == "CPU"
        self._step = signature_call(
            _signature(self._saved_model, store.STEP_SIGNATURE, self.path), on_cpu=on_cpu
        )
        self._initial_state = _signature(self._saved_model, store.INITIAL_STATE_SIGNATURE, self.path)
        # Versions exported before prompts were read in one call have no prefill; their prompts go step by step.
        prefill = self._saved_model.signatures.get(store.PREFILL_SIGNATURE)
        self._prefill = None if prefill is None else signature_call(prefill, on_cpu=on_cpu)

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

        inputs = {
            store.TOKEN_IDS_INPUT: np.asarray(token_ids, np.int32),
            store.STATE_INPUT: np.asarray(state, np.float32),
        }
        with tf.device(self.device.name):
            outputs = self._step(inputs)
        return outputs[store.LOGITS_OUTPUT].numpy(), outputs[store.STATE_OUTPUT].numpy()

    @property
    def can_prefill(self) -> bool:
        return self._prefill is not None

    def prefill(
        self, token_ids: np.ndarray, lengths: np.ndarray, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        if self._prefill is None:
            raise ModelLoadError(f"the version in {self.path} has no {store.PREFILL_SIGNATURE!r} signature")
        inputs = {
            store.TOKEN_IDS_INPUT: np.asarray(token_ids, np.int32),
            store.LENGTHS_INPUT: np.asarray(lengths, np.int32),
            store.STATE_INPUT: np.asarray(state, np.float32),
        }
        with tf.device(self.device.name):
            outputs = self._prefill(inputs)
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
        if self.can_prefill:
            expected = ((1, self.vocabulary_size), (1, self.text.state_size))
            logits, new_state = self.prefill(np.zeros((1, 2), np.int32), np.array([2], np.int32), state[:1])
            if (logits.shape, new_state.shape) != expected:
                raise ModelLoadError(
                    f"prefill returned logits {logits.shape} and state {new_state.shape}; metadata promises "
                    f"{expected}"
                )
        return time.perf_counter() - started


def _signature(saved_model: Any, name: str, path: Path) -> Any:
    signature = saved_model.signatures.get(name)
    if signature is None:
        raise ModelLoadError(f"SavedModel in {path} has no {name!r} signature")
    return signature
