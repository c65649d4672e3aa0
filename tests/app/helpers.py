"""Decoding what the service returns, for assertions on real pixels."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.image import runtime as image_runtime
from app.main import create_app
from tests.conftest import make_settings


def decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    if image.format != "PNG":
        raise AssertionError(f"expected PNG, got {image.format}")
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def decode_base64_png(text: str) -> np.ndarray:
    return decode_png(base64.b64decode(text))


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def frame_count(data: bytes) -> int:
    return int(getattr(Image.open(io.BytesIO(data)), "n_frames", 1))


# Half a step of 16-bit PCM (and float32 arithmetic): what rounding a sample into a WAV may change it by.
PCM_ROUNDING = 0.5 / 32767 + 1e-6


def read_wav(data: bytes) -> tuple[np.ndarray, wave.Wave_read]:
    """The samples of a 16-bit mono WAV as floats in [-1, 1], and its reader (rate, width, channels)."""
    reader = wave.open(io.BytesIO(data))
    frames = reader.readframes(reader.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32767, reader


def assert_pcm_of(samples: np.ndarray, clips: np.ndarray) -> None:
    """`samples` (from a WAV) are `clips` within the rounding of 16-bit PCM."""
    np.testing.assert_allclose(samples, clips, rtol=0, atol=PCM_ROUNDING)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@asynccontextmanager
async def running_app(
    store: Path, *, wait_ready: bool = True, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(store, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            deadline = time.monotonic() + 60
            while wait_ready and (await client.get("/readyz")).status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError("service not ready")
                await asyncio.sleep(0.05)
            yield client


class HeldModel:
    """Patches the image runtime so that, once `armed`, model calls wait until `release` is set: to keep work
    queued or in flight on purpose."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, timeout_s: float = 30.0) -> None:
        self.armed = False
        self.started = threading.Event()
        self.release = threading.Event()
        original: Callable[..., np.ndarray] = image_runtime.ImageRuntime.generate
        held = self

        def generate(self: image_runtime.ImageRuntime, inputs: dict[str, Any]) -> np.ndarray:
            if held.armed:
                held.started.set()
                held.release.wait(timeout=timeout_s)
            return original(self, inputs)

        monkeypatch.setattr(image_runtime.ImageRuntime, "generate", generate)

    async def wait_started(self) -> None:
        await asyncio.to_thread(self.started.wait, 10)
