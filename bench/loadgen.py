"""Closed-loop load: POST /generate through `wrk` when it is installed, asyncio sockets otherwise, and any
other request (another protocol, another client library) through `run_senders`.

Each of `concurrency` connections sends its next request as soon as the previous answer arrives.
Answers finishing during the warm-up are discarded; the rest count until the duration ends.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

REQUEST_TIMEOUT_S = 60.0
_SEED_MODULUS = 2**31  # keeps seed + n - 1 far below the service's 2**32 - 1 limit
_ERROR_BACKOFF_S = 0.01  # stops a refused connection from turning a worker into a busy loop
_WRK_MARKER = "GENSERVE_RESULT"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class LoadSpec:
    """One closed-loop run: `concurrency` workers asking for `n` PNG images per request."""

    base_url: str
    n: int
    concurrency: int
    duration_s: float
    warmup_s: float
    seed_start: int = 0

    def path(self, seed: int) -> str:
        return f"/generate?n={self.n}&seed={seed}&format=png"


@dataclass(frozen=True)
class LoadResult:
    """What one run measured; latencies cover 200 answers (with wrk, every answer: it cannot tell them apart)."""

    ok: int
    errors: int
    measured_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    client_cpu_s: float
    wall_s: float

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.measured_s if self.measured_s > 0 else 0.0

    @property
    def client_cpu_pct(self) -> float:
        return 100 * self.client_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


LoadClient = Callable[[LoadSpec], LoadResult]
Send = Callable[
    [int], Awaitable[bool]
]  # one request for a seed on a kept-alive connection; True when it succeeded
OpenSenders = Callable[[LoadSpec], AbstractAsyncContextManager[list[Send]]]  # one sender per connection


def choose_client(name: str) -> tuple[str, LoadClient]:
    """The load client for "auto" (wrk when on PATH, else "socket"), "wrk", "socket" or "httpx"."""
    wrk = shutil.which("wrk")
    if name == "wrk" and wrk is None:
        raise ValueError("--client wrk needs `wrk` on PATH (apt-get install wrk); use --client socket")
    if name in ("auto", "wrk") and wrk is not None:
        return "wrk", lambda spec: run_wrk(spec, wrk)
    if name in ("auto", "socket"):
        return "socket", run_socket
    if name == "httpx":
        return "httpx", run_httpx
    raise ValueError(f"unknown client {name!r}; choose auto, wrk, socket or httpx")


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def median_of_present(values: Sequence[float | None]) -> float | None:
    """The median of the values that were measured (None: a run that measured nothing); None when none were."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def shown(value: float | None, digits: int) -> str:
    """A measurement as a table or log shows it: `digits` decimals, or a dash when nothing was measured."""
    return "–" if value is None else f"{value:.{digits}f}"


# --- in-process asyncio clients ------------------------------------------------------------------


@dataclass
class _Tally:
    window_start: float
    window_end: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0

    def record(self, finished: float, latency_s: float, ok: bool) -> None:
        if not self.window_start <= finished <= self.window_end:
            return
        if ok:
            self.latencies_s.append(latency_s)
        else:
            self.errors += 1


def run_socket(spec: LoadSpec) -> LoadResult:
    """Drive the server from this process over raw asyncio streams: about 20x less CPU per request than httpx."""
    return _run_in_process(spec, _socket_load)


def run_httpx(spec: LoadSpec) -> LoadResult:
    """Drive the server through one httpx.AsyncClient; a reference client, heavy at high concurrency."""
    return _run_in_process(spec, _httpx_load)


def run_senders(spec: LoadSpec, open_senders: OpenSenders) -> LoadResult:
    """Drive the server from this process with the senders `open_senders` yields (one per connection)."""

    async def load(spec: LoadSpec, tally: _Tally) -> None:
        async with open_senders(spec) as senders:
            await _closed_loop(spec, tally, senders)

    return _run_in_process(spec, load)


@asynccontextmanager
async def http_connections(spec: LoadSpec) -> AsyncIterator[list[HttpConnection]]:
    """`spec.concurrency` kept-alive HTTP/1.1 connections to the spec's server, closed on exit."""
    address = urlsplit(spec.base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    connections = [HttpConnection(host, port) for _ in range(spec.concurrency)]
    try:
        yield connections
    finally:
        for connection in connections:
            connection.close()


def _run_in_process(
    spec: LoadSpec, load: Callable[[LoadSpec, _Tally], Coroutine[Any, Any, None]]
) -> LoadResult:
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    window_start = wall_started + spec.warmup_s
    tally = _Tally(window_start, window_start + spec.duration_s)
    asyncio.run(load(spec, tally))
    latencies_ms = sorted(1000 * value for value in tally.latencies_s)
    return LoadResult(
        ok=len(latencies_ms),
        errors=tally.errors,
        measured_s=spec.duration_s,
        p50_ms=percentile(latencies_ms, 0.50),
        p95_ms=percentile(latencies_ms, 0.95),
        p99_ms=percentile(latencies_ms, 0.99),
        client_cpu_s=time.process_time() - cpu_started,
        wall_s=time.perf_counter() - wall_started,
    )


async def _socket_load(spec: LoadSpec, tally: _Tally) -> None:
    async with http_connections(spec) as connections:
        senders = [_generate_sender(spec, connection) for connection in connections]
        await _closed_loop(spec, tally, senders)


def _generate_sender(spec: LoadSpec, connection: HttpConnection) -> Send:
    async def send(seed: int) -> bool:
        return await connection.post(spec.path(seed))

    return send


async def _httpx_load(spec: LoadSpec, tally: _Tally) -> None:
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    async with httpx.AsyncClient(base_url=spec.base_url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        async def send(seed: int) -> bool:
            try:
                response = await client.post(spec.path(seed))
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        await _closed_loop(spec, tally, [send] * spec.concurrency)


async def _closed_loop(spec: LoadSpec, tally: _Tally, senders: list[Send]) -> None:
    seeds = _seeds(spec)
    workers = [asyncio.create_task(_worker(send, spec, seeds, tally)) for send in senders]
    # Workers stop sending at the window's end; one request timeout bounds the wait for the last answers.
    _, late = await asyncio.wait(workers, timeout=tally.window_end - time.perf_counter() + REQUEST_TIMEOUT_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


async def _worker(send: Send, spec: LoadSpec, seeds: Iterator[int], tally: _Tally) -> None:
    while (sent := time.perf_counter()) < tally.window_end:
        ok = await send(next(seeds))
        finished = time.perf_counter()
        tally.record(finished, finished - sent, ok)
        if not ok:
            await asyncio.sleep(_ERROR_BACKOFF_S)


def _seeds(spec: LoadSpec) -> Iterator[int]:
    return ((spec.seed_start + index * spec.n) % _SEED_MODULUS for index in itertools.count())


class HttpConnection:
    """One kept-alive HTTP/1.1 connection; reads each answer by its Content-Length and discards the body."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes = b"", headers: str = "") -> bool:
        """POST `body` with extra `headers` (lines ending in CRLF); True for a 200 answer."""
        try:
            if self._streams is None:
                self._streams = await asyncio.open_connection(self._host, self._port)
            reader, writer = self._streams
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(request.encode() + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(answer))
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError):
            self.close()  # the next request starts on a fresh connection
            return False
        return answer.startswith(b"HTTP/1.1 200 ")

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _content_length(head: bytes) -> int:
    match = _CONTENT_LENGTH.search(head)
    if match is None:
        raise ValueError("answer without Content-Length")
    return int(match.group(1))


# --- wrk -----------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local n = {n}
local next_seed = {seed_start}
request = function()
  local path = "/generate?n=" .. n .. "&seed=" .. next_seed .. "&format=png"
  next_seed = (next_seed + n) % {modulus}
  return wrk.format("POST", path, nil, "")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{marker} %d %d %d %d %f %f %f\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""
_WRK_RESULT = re.compile(rf"^{_WRK_MARKER} (\d+) (\d+) (\d+) (\d+) (\S+) (\S+) (\S+)$", re.MULTILINE)


def run_wrk(spec: LoadSpec, wrk: str) -> LoadResult:
    """Drive the server with one wrk thread (C, epoll) holding `concurrency` connections."""
    wall_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genserve-wrk-") as folder:
        script = Path(folder) / "generate.lua"
        script.write_text(
            _WRK_SCRIPT.format(
                n=spec.n, seed_start=spec.seed_start, modulus=_SEED_MODULUS, marker=_WRK_MARKER
            )
        )
        cpu_started = _children_cpu_s()
        if spec.warmup_s > 0:
            _call_wrk(wrk, spec, script, math.ceil(spec.warmup_s))
        output = _call_wrk(wrk, spec, script, max(1, round(spec.duration_s)))
        client_cpu_s = _children_cpu_s() - cpu_started
    return _parse_wrk(output, client_cpu_s, time.perf_counter() - wall_started)


def _call_wrk(wrk: str, spec: LoadSpec, script: Path, seconds: int) -> str:
    # wrk takes whole seconds; its own timeout must exceed the slowest answer or they count as errors.
    command = [wrk, "-t1", f"-c{spec.concurrency}", f"-d{seconds}s", f"--timeout={REQUEST_TIMEOUT_S:.0f}s"]
    command += ["-s", str(script), spec.base_url]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + REQUEST_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk exited with {completed.returncode}: {completed.stderr.strip()}")
    return completed.stdout


def _parse_wrk(output: str, client_cpu_s: float, wall_s: float) -> LoadResult:
    match = _WRK_RESULT.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no {_WRK_MARKER} line:\n{output}")
    requests, duration_us, status_errors, socket_errors = (int(match.group(i)) for i in range(1, 5))
    ok = requests - status_errors
    p50, p95, p99 = (float(match.group(i)) / 1000 if ok else None for i in range(5, 8))
    return LoadResult(
        ok=ok,
        errors=status_errors + socket_errors,
        measured_s=duration_us / 1e6,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        client_cpu_s=client_cpu_s,
        wall_s=wall_s,
    )


def _children_cpu_s() -> float:
    """CPU seconds of finished child processes (wrk); a still-running server is not counted."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
