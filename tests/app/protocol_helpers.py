"""What the inference-protocol tests share: one store holding both tiny models, and seeded latents."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from bench.processes import free_port, running_service
from genserve import store
from genserve.conventions import latents_from_seeds
from tests.conftest import TINY_LATENT_DIM, TINY_MODEL

LABELS = {"stable": 1}


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
def serving_process(model_store: Path, log: Path, **settings: str) -> Iterator[str]:
    """`python -m app` over `model_store`, ready; yields its base URL. `settings` are GENSERVE_* values."""
    env = {
        **os.environ,
        "GENSERVE_MODEL_STORE": str(model_store),
        "GENSERVE_DEFAULT_MODEL": TINY_MODEL,
        "GENSERVE_HOST": "127.0.0.1",
        "GENSERVE_PORT": str(free_port()),
        "GENSERVE_SHUTDOWN_GRACE_S": "5",
        **{f"GENSERVE_{name.upper()}": value for name, value in settings.items()},
    }
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
