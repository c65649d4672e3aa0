"""Decoding what the service returns, for assertions on real pixels."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

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
