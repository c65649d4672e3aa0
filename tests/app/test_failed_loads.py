"""Versions that load but cannot be served: each is marked failed, counted, retried with growing waits,
and never takes over from the version that is serving."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tensorflow as tf

from app.serving.loader import ModelLoader
from app.serving.registry import ModelVersion
from app.serving.runtime import DeviceInfo
from genserve import store
from genserve.store import ModelMetadata
from tests.app.helpers import decode_npy, running_app
from tests.conftest import TINY_LATENT_DIM, TINY_MODEL

IMAGE_SHAPE = (28, 28, 3)
RETRY_INITIAL_S = 0.1
# Waits between attempts double: 0.1, 0.2, 0.4 s. Four attempts show three waits.
ATTEMPTS = 4
# How late a retry may start after its wait is over (store polling, a busy event loop on shared cores).
RETRY_SLACK_S = 1.5
SEED = 7


@dataclass(frozen=True)
class Broken:
    """A SavedModel that TensorFlow loads, and what its metadata claims about it."""

    build: Callable[[], tf.Module]
    metadata: dict[str, Any]  # overrides of version 1's metadata
    error: str  # part of the reason /models must give


def generator_module(
    *,
    latent_dim: int = TINY_LATENT_DIM,
    output_shape: tuple[int | None, ...] = IMAGE_SHAPE,
    dtype: tf.DType = tf.uint8,
    refuse_to_run: bool = False,
) -> tf.Module:
    """A generator whose images are grey levels of the latent's mean, with the given signature."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, latent_dim], tf.float32, name=store.LATENT_INPUT)])
    def generate(z: tf.Tensor) -> dict[str, tf.Tensor]:
        if refuse_to_run:
            tf.debugging.assert_less(tf.reduce_max(z), -1e9, message="this model refuses to run")
        height, width, channels = (
            dim if dim is not None else tf.shape(z)[0] * 0 + 32 for dim in output_shape
        )
        grey = tf.sigmoid(tf.reduce_mean(z, axis=1)) * 255.0
        images = tf.zeros(tf.stack([tf.shape(z)[0], height, width, channels])) + grey[:, None, None, None]
        return {store.IMAGES_OUTPUT: tf.cast(images, dtype)}

    module.generate = generate
    return module


BROKEN = {
    "float_images": Broken(lambda: generator_module(dtype=tf.float32), {}, "must be uint8"),
    "wrong_image_shape": Broken(
        lambda: generator_module(output_shape=(32, 32, 3)), {}, "does not match metadata"
    ),
    # The graph leaves height and width open, so only running it shows the mismatch.
    "wrong_image_shape_at_run_time": Broken(
        lambda: generator_module(output_shape=(None, None, 3)), {}, "metadata promises"
    ),
    "wrong_latent_size": Broken(
        lambda: generator_module(latent_dim=TINY_LATENT_DIM // 2), {}, "float32 [None, 16]"
    ),
    "vae_without_encoder": Broken(generator_module, {"kind": "vae"}, "without an 'encode' signature"),
    "warm_up_raises": Broken(lambda: generator_module(refuse_to_run=True), {}, "this model refuses to run"),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each broken SavedModel, saved once; tests copy them into their stores."""
    root = tmp_path_factory.mktemp("broken-saved-models")
    folders = {}
    for name, broken in BROKEN.items():
        module = broken.build()
        tf.saved_model.save(module, str(root / name), signatures={store.SIGNATURE_NAME: module.generate})
        folders[name] = root / name
    return folders


@dataclass(frozen=True)
class Attempt:
    version: int
    started: float
    finished: float
    loaded: bool


def record_load_attempts(monkeypatch: pytest.MonkeyPatch) -> list[Attempt]:
    attempts: list[Attempt] = []
    original = ModelLoader.load

    async def load(loader: ModelLoader, model_version: ModelVersion, device: DeviceInfo) -> bool:
        started = time.monotonic()
        loaded = await original(loader, model_version, device)
        attempts.append(Attempt(model_version.version, started, time.monotonic(), loaded))
        return loaded

    monkeypatch.setattr(ModelLoader, "load", load)
    return attempts


def publish_saved_model(root: Path, saved_model: Path, metadata: ModelMetadata) -> Path:
    def write(folder: Path) -> None:
        shutil.copytree(saved_model, folder, dirs_exist_ok=True)

    return store.publish_version(root, metadata, write)


async def load_failures(client: httpx.AsyncClient) -> float:
    prefix = f'genserve_model_load_failures_total{{model="{TINY_MODEL}"}}'
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


async def generated(client: httpx.AsyncClient) -> tuple[str, np.ndarray]:
    response = await client.post("/generate", params={"n": 2, "seed": SEED, "format": "npy"})
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"], decode_npy(response.content)


async def failed_attempts(
    attempts: list[Attempt], version: int, count: int, timeout_s: float = 30.0
) -> list[Attempt]:
    """The first `count` load attempts of `version`, once made; an attempt that loads fails the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        tried = [a for a in attempts if a.version == version]
        assert not any(a.loaded for a in tried), f"version {version} loaded: {tried}"
        if len(tried) >= count:
            return tried
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} load attempts of version {version} expected, got {tried}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("case", list(BROKEN))
def test_unservable_version_fails_is_retried_with_backoff_and_never_serves(
    case: str,
    tiny_store: Path,
    tmp_path: Path,
    saved_models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = BROKEN[case]
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    metadata = store.read_metadata(store.version_dir(root, TINY_MODEL, 1))
    attempts = record_load_attempts(monkeypatch)

    async def scenario() -> None:
        async with running_app(
            root, poll_interval_s=0.02, load_retry_initial_s=RETRY_INITIAL_S, load_retry_max_s=60
        ) as client:
            before = await generated(client)
            await asyncio.to_thread(
                publish_saved_model, root, saved_models[case], metadata.model_copy(update=broken.metadata)
            )
            tried = await failed_attempts(attempts, 2, ATTEMPTS)

            detail = (await client.get(f"/models/{TINY_MODEL}")).json()
            statuses = {v["version"]: v["status"] for v in detail["versions"]}
            assert statuses == {1: "available", 2: "failed"}
            assert broken.error in detail["versions"][1]["error"]
            assert await load_failures(client) >= len(tried)

            # Each wait is at least the scheduled one, which doubles: the retries back off.
            waits = [later.started - earlier.finished for earlier, later in itertools.pairwise(tried)]
            for index, wait in enumerate(waits[: ATTEMPTS - 1]):
                scheduled = RETRY_INITIAL_S * 2**index
                assert scheduled <= wait <= scheduled + RETRY_SLACK_S, waits

            assert (await client.get("/readyz")).status_code == 200
            after = await generated(client)
            assert after[0] == "1"
            assert np.array_equal(after[1], before[1])

    asyncio.run(scenario())
