"""What the inference-protocol tests share: one store holding several tiny models, seeded latents, and the app
serving HTTP and gRPC from one event loop under uvicorn on a thread of the test process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from app.config import Settings
from app.main import create_app
from app.serving.registry import ModelRegistry
from bench.processes import free_port, running_service, service_env
from genserve import store
from genserve.conventions import latents_from_seeds
from tests.app.helpers import decode_npy
from tests.conftest import TINY_LATENT_DIM, TINY_MODEL, make_settings

LABELS = {"stable": 1}
TIMEOUT_S = 30


def combined_store(root: Path, *stores: Path) -> Path:
    """A store under `root` serving every model of `stores`, each with a `stable` label on version 1.

    Version folders are links into the (read-only, session-wide) stores, so nothing is trained or copied.
    """
    for source in stores:
        for model in sorted(path for path in source.iterdir() if path.is_dir()):
            folder = root / model.name
            folder.mkdir(parents=True)
            for version in sorted(path for path in model.iterdir() if path.is_dir()):
                (folder / version.name).symlink_to(version, target_is_directory=True)
            (folder / store.LABELS_FILE).write_text(json.dumps(LABELS))
    return root


def seeded_latents(seeds: list[int]) -> np.ndarray:
    """The latents `/generate` draws for `seeds`."""
    return latents_from_seeds(seeds, TINY_LATENT_DIM)


@contextmanager
def serving_process(model_store: Path, log: Path, **settings: Any) -> Iterator[str]:
    """`python -m app` over `model_store`, ready; yields its base URL. `settings` are GENSERVE_* values."""
    env = service_env(model_store, default_model=TINY_MODEL, shutdown_grace_s=5, **settings)
    with running_service(env, log) as (_, base_url):
        wait_for_every_model(base_url)
        yield base_url


def wait_for_every_model(
    base_url: str, timeout_s: float = 60.0, get: Callable[[str], httpx.Response] = httpx.get
) -> None:
    """Wait until every model in the store has a version serving (/readyz only waits for the default)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = get(f"{base_url}/models").json()["models"]
        if models and all(model["latest_available"] is not None for model in models):
            return
        time.sleep(0.1)
    raise TimeoutError(f"models not loaded after {timeout_s} s")


@dataclass
class Served:
    app: FastAPI
    http: httpx.Client
    prediction: prediction_service_pb2_grpc.PredictionServiceStub
    models: model_service_pb2_grpc.ModelServiceStub
    grpc_address: str

    @property
    def registry(self) -> ModelRegistry:
        registry: ModelRegistry = self.app.state.registry
        return registry

    @property
    def address(self) -> str:
        """host:port of the HTTP API, as Triton's client takes it."""
        return str(self.http.base_url).removeprefix("http://").rstrip("/")

    def generated(self, model: str, seed: int, n: int) -> np.ndarray:
        params: dict[str, str | int] = {"model": model, "seed": seed, "n": n, "format": "npy"}
        response = self.http.post("/generate", params=params)
        assert response.status_code == 200
        return decode_npy(response.content)

    def batching(self, model: str) -> dict[str, int]:
        stats: dict[str, int] = self.http.get(f"/models/{model}").json()["versions"][0]["batching"]
        return stats


@contextmanager
def serving(
    model_store: Path, http_headers: dict[str, str] | None = None, **overrides: object
) -> Iterator[Served]:
    """The app over `model_store` with its gRPC API on, under uvicorn on a thread; stopped on exit. The HTTP
    client sends `http_headers` with every request (an API key, say)."""
    settings: Settings = make_settings(
        model_store, default_model=TINY_MODEL, port=free_port(), grpc_port=free_port(), **overrides
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{settings.port}"
    try:
        with (
            httpx.Client(base_url=base_url, timeout=TIMEOUT_S, headers=http_headers) as http,
            grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
        ):
            _wait_until_serving(base_url, thread, http)
            yield Served(
                app,
                http,
                prediction_service_pb2_grpc.PredictionServiceStub(channel),
                model_service_pb2_grpc.ModelServiceStub(channel),
                f"127.0.0.1:{settings.grpc_port}",
            )
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_S)


def _wait_until_serving(base_url: str, thread: threading.Thread, http: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and thread.is_alive():
        try:
            if httpx.get(f"{base_url}/readyz").status_code == 200:
                wait_for_every_model(base_url, get=lambda url: http.get(url))
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the threaded server did not become ready")


def predict_request(model: str, **inputs: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    return request


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value
