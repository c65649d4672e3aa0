"""The real server process: start-up on GENSERVE_HOST/PORT and graceful drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.helpers import decode_png


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tiny_store: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "GENSERVE_MODEL_STORE": str(tiny_store),
        "GENSERVE_HOST": "127.0.0.1",
        "GENSERVE_PORT": str(port),
        "GENSERVE_MAX_BATCH_SIZE": "64",
        "GENSERVE_MAX_DELAY_MS": "1500",
        "GENSERVE_ADAPTIVE_DELAY": "false",
        "GENSERVE_SHUTDOWN_GRACE_S": "10",
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "app"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ready(process, base_url)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


def wait_for_ready(process: subprocess.Popen[bytes], base_url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server did not become ready")


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
