"""Batching seen at the model: concurrent requests reach the SavedModel as a few calls of many rows."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from app.image import runtime as image_runtime
from tests.app.helpers import decode_npy, max_abs_diff, running_app

# Request sizes of the concurrent burst: 24 images in 12 requests.
SIZES = [1, 2, 3] * 4


class ModelCalls:
    """Records the rows of every call of a loaded model's serving signature."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[int] = []
        self._lock = threading.Lock()
        original = image_runtime.ImageRuntime.generate
        calls = self

        def generate(self: image_runtime.ImageRuntime, inputs: dict[str, np.ndarray]) -> np.ndarray:
            with calls._lock:
                calls.rows.append(len(next(iter(inputs.values()))))
            return original(self, inputs)

        monkeypatch.setattr(image_runtime.ImageRuntime, "generate", generate)

    def take(self) -> list[int]:
        with self._lock:
            rows, self.rows = self.rows, []
        return rows


def test_concurrent_requests_reach_the_model_as_few_multi_row_calls(
    tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = ModelCalls(monkeypatch)

    async def scenario() -> None:
        # No adaptive shortcut: every batch waits up to 300 ms for company, so the burst shares calls.
        async with running_app(
            tiny_store, max_batch_size=64, max_delay_ms=300, adaptive_delay=False
        ) as client:
            calls.take()  # warm-up calls
            responses = await asyncio.gather(
                *(
                    client.post("/generate", params={"n": n, "seed": 100 * i, "format": "npy"})
                    for i, n in enumerate(SIZES)
                )
            )
            assert [r.status_code for r in responses] == [200] * len(SIZES)
            rows = calls.take()
            assert sum(rows) == sum(SIZES), rows
            assert max(rows) > max(SIZES), rows
            assert len(rows) <= 3, rows

            # Each request still gets its own images back, the same as when it is alone.
            for i, (n, response) in enumerate(zip(SIZES, responses, strict=True)):
                alone = await client.post("/generate", params={"n": n, "seed": 100 * i, "format": "npy"})
                assert max_abs_diff(decode_npy(response.content), decode_npy(alone.content)) <= 1

    asyncio.run(scenario())
