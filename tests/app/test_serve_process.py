"""The real server process: start-up on GENSERVE_HOST/PORT and graceful drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.processes import free_port, running_service
from tests.app.helpers import decode_png


@pytest.fixture
def server(tiny_store: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    env = {
        **os.environ,
        "GENSERVE_MODEL_STORE": str(tiny_store),
        "GENSERVE_HOST": "127.0.0.1",
        "GENSERVE_PORT": str(free_port()),
        "GENSERVE_MAX_BATCH_SIZE": "64",
        "GENSERVE_MAX_DELAY_MS": "1500",
        "GENSERVE_ADAPTIVE_DELAY": "false",
        "GENSERVE_SHUTDOWN_GRACE_S": "10",
    }
    with running_service(env, tmp_path / "server.log") as started:
        yield started


def test_sigterm_drains_queued_work_then_exits_zero(server: tuple[subprocess.Popen[bytes], str]) -> None:
    process, base_url = server
    results: list[httpx.Response] = []
    # The batch waits 1.5 s for company, so this request is still queued when SIGTERM arrives.
    queued = threading.Thread(
        target=lambda: results.append(
            httpx.post(f"{base_url}/generate", params={"n": 2, "seed": 5}, timeout=30)
        )
    )
    queued.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)

    ready = httpx.get(f"{base_url}/readyz", timeout=5)
    assert ready.status_code == 503
    refused = httpx.post(f"{base_url}/generate", params={"n": 1}, timeout=5)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert "retry-after" in refused.headers

    queued.join(timeout=30)
    assert results and results[0].status_code == 200
    assert decode_png(results[0].content).shape[1] == 2 * 30 + 2
    assert process.wait(timeout=20) == 0
