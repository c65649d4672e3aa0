"""The real server process: start-up on GENSERVE_HOST/PORT and graceful drain on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.processes import free_port, running_service, service_env, start, wait_until_ready
from genserve.console import LOG_LEVEL_VARIABLE, START_UP_NOISE
from tests.app.helpers import decode_png
from tests.conftest import TINY_MODEL

GRACE_S = 2.0
# A grace period that a test proving "at once" must not wait for, however loaded the machine.
LONG_GRACE_S = 40.0
# How long the process may take past its grace period to answer and exit: well below the 60 s model call, so
# an exit inside it proves the call was abandoned, with room for a machine busy with other work.
EXIT_SLACK_S = 20.0
# `python -m app` with a model call that outlasts any grace period of these tests.
SLOW_MODEL_SERVER = """
import time

from app.image import runtime as image_runtime
from app.serving import runtime
from app.__main__ import main

generate = image_runtime.ImageRuntime.run


def slow_run(self, inputs):
    time.sleep(60)
    return generate(self, inputs)


image_runtime.ImageRuntime.run = slow_run
main()
"""


@pytest.fixture
def server(tiny_store: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    env = service_env(
        tiny_store, max_batch_size=64, max_delay_ms=4000, adaptive_delay="false", shutdown_grace_s=10
    )
    with running_service(env, tmp_path / "server.log") as started:
        yield started


def test_the_console_shows_the_service_and_not_tensorflow_start_up_notices(
    tiny_store: Path, tmp_path: Path
) -> None:
    env = service_env(tiny_store)
    env.pop(LOG_LEVEL_VARIABLE, None)
    log = tmp_path / "server.log"
    with running_service(env, log) as (_, base_url):
        assert httpx.post(f"{base_url}/generate", params={"n": 1, "seed": 1}).status_code == 200
    lines = log.read_text().splitlines()
    assert any("Application startup complete" in line for line in lines), lines
    assert not [line for line in lines if START_UP_NOISE.search(line)]


def test_sigterm_drains_queued_work_then_exits_zero(server: tuple[subprocess.Popen[bytes], str]) -> None:
    process, base_url = server
    results: list[httpx.Response] = []
    # The batch waits 4 s for company, so this request is still queued when SIGTERM arrives.
    queued = threading.Thread(
        target=lambda: results.append(
            httpx.post(f"{base_url}/generate", params={"n": 2, "seed": 5}, timeout=30)
        )
    )
    queued.start()
    wait_for_queued_images(base_url, 2)
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


def wait_for_queued_images(base_url: str, images: int) -> None:
    """Until the service reports `images` images waiting for a model call (its queue-depth gauge)."""
    pattern = re.compile(rf'^genserve_queue_depth_images{{model="{TINY_MODEL}",version="1"}} (\S+)$', re.M)
    deadline = time.monotonic() + 60
    while True:
        found = pattern.search(httpx.get(f"{base_url}/metrics", timeout=10).text)
        if found and float(found[1]) == images:
            return
        assert time.monotonic() < deadline, f"never saw {images} queued images"
        time.sleep(0.05)


@pytest.fixture
def slow_server(tiny_store: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A server whose model calls take a minute, with a grace period of GRACE_S; and its log."""
    yield from _slow_server(tiny_store, tmp_path, GRACE_S)


@pytest.fixture
def slow_server_long_grace(
    tiny_store: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The same server with a grace period of LONG_GRACE_S."""
    yield from _slow_server(tiny_store, tmp_path, LONG_GRACE_S)


def _slow_server(
    tiny_store: Path, tmp_path: Path, grace_s: float
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    # One model call at a time: the second request waits in the queue behind the first.
    env = service_env(tiny_store, port, max_delay_ms=0, max_concurrent_batches=1, shutdown_grace_s=grace_s)
    log = tmp_path / "server.log"
    process = start([sys.executable, "-c", SLOW_MODEL_SERVER], log, env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base_url}/readyz", process, log, 90)
        yield process, base_url, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def send_in_background(base_url: str, results: list[httpx.Response | Exception]) -> threading.Thread:
    def send() -> None:
        try:
            results.append(httpx.post(f"{base_url}/generate", params={"n": 2, "seed": 5}, timeout=90))
        except httpx.HTTPError as error:
            results.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@dataclass
class Waiting:
    """Requests sent from threads, and what each got back once `answers` has waited for them."""

    threads: list[threading.Thread]
    results: list[httpx.Response | Exception]

    def answers(self) -> list[httpx.Response | Exception]:
        for thread in self.threads:
            thread.join(timeout=10)
        return self.results


def one_in_flight_one_queued(base_url: str) -> Waiting:
    """Two requests of 2 images: the first inside a model call, the second waiting behind it."""
    results: list[httpx.Response | Exception] = []
    first = send_in_background(base_url, results)
    deadline = time.monotonic() + 30
    while httpx.get(f"{base_url}/models/{TINY_MODEL}").json()["versions"][0]["batching"]["model_calls"] < 1:
        assert time.monotonic() < deadline, "the first request never reached the model"
        time.sleep(0.05)
    second = send_in_background(base_url, results)
    wait_for_queued_images(base_url, 2)
    return Waiting([first, second], results)


def exit_seconds(process: subprocess.Popen[bytes], since: float) -> tuple[int, float]:
    code = process.wait(timeout=30)
    return code, time.monotonic() - since


def test_work_outlasting_the_grace_is_answered_503_and_the_process_exits_in_time(
    slow_server: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, base_url, log = slow_server
    waiting = one_in_flight_one_queued(base_url)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)

    code, seconds = exit_seconds(process, signalled)
    assert code == 0
    # The grace period, then the answers go out: long before the model call would have ended.
    assert GRACE_S <= seconds < GRACE_S + EXIT_SLACK_S, seconds
    results = waiting.answers()
    assert len(results) == 2
    for response in results:
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "shutting_down"
        assert int(response.headers["retry-after"]) >= 1
    assert re.search(
        rf"dropping 2 queued and 2 in-flight images of {TINY_MODEL} version 1", log.read_text()
    ), log.read_text()[-3000:]


def test_second_sigterm_exits_at_once(
    slow_server_long_grace: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, base_url, log = slow_server_long_grace
    waiting = one_in_flight_one_queued(base_url)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)

    code, seconds = exit_seconds(process, signalled)
    assert code == 128 + signal.SIGTERM
    # Without the second signal the process would wait out its grace period first.
    assert seconds < LONG_GRACE_S / 2, seconds
    waiting.answers()
    assert "second SIGTERM: stopping now, dropping 4 pending images" in log.read_text()
