"""A text runtime's model calls watched and slowed: shared by the text route and protocol tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from app.text import runtime as text_runtime


class StepRecorder:
    """Wraps the text runtime's step: records each call's batch size, optionally slows or holds it (and its
    prefill: slowed and held alike, not recorded)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay_s: float = 0.0) -> None:
        self.batch_sizes: list[int] = []
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        original = text_runtime.TextRuntime.step
        recorder = self

        def step(self: text_runtime.TextRuntime, token_ids: np.ndarray, state: np.ndarray) -> Any:
            recorder.started.set()
            recorder.release.wait(10)
            recorder.batch_sizes.append(len(token_ids))
            if recorder.delay_s:
                time.sleep(recorder.delay_s)
            return original(self, token_ids, state)

        original_prefill = text_runtime.TextRuntime.prefill

        def prefill(self: text_runtime.TextRuntime, *arrays: np.ndarray) -> Any:
            recorder.release.wait(10)
            if recorder.delay_s:
                time.sleep(recorder.delay_s)
            return original_prefill(self, *arrays)

        monkeypatch.setattr(text_runtime.TextRuntime, "step", step)
        monkeypatch.setattr(text_runtime.TextRuntime, "prefill", prefill)
