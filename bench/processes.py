"""Running `python -m app` (or any server) as a real process on loopback: for benchmarks and process tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx

_READY_POLL_S = 0.2
_LOG_TAIL_CHARS = 3000
_STOP_TIMEOUT_S = 30.0


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    [port] = free_ports(1)
    return port


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports on 127.0.0.1 that nothing listens on right now (held together while chosen)."""
    with contextlib.ExitStack() as held:
        probes = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def service_env(
    model_store: Path, port: int | None = None, *, clean: bool = False, **settings: object
) -> dict[str, str]:
    """The environment of `python -m app` over `model_store` on 127.0.0.1:`port` (a free port by default), with
    more GENSERVE_* values by lower-case name (`max_n=8`). `clean` drops inherited GENSERVE_* variables, which
    would silently change what a benchmark measures."""
    inherited = {
        key: value for key, value in os.environ.items() if not (clean and key.startswith("GENSERVE_"))
    }
    return inherited | {
        "GENSERVE_MODEL_STORE": str(model_store),
        "GENSERVE_HOST": "127.0.0.1",
        "GENSERVE_PORT": str(port or free_port()),
        **{f"GENSERVE_{name.upper()}": str(value) for name, value in settings.items()},
    }


def start(
    command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` (in `cwd`) with stdout and stderr going to `log`."""
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Poll `url` until it answers 200; raise ServerStartError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(f"{process.args!r} exited with {process.returncode}:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(_READY_POLL_S)
    raise ServerStartError(f"{url} not ready after {timeout_s:.0f} s:\n{_tail(log)}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = _STOP_TIMEOUT_S) -> None:
    """SIGTERM (a graceful drain), then SIGKILL if the process is still there after `timeout_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_service(
    env: dict[str, str], log: Path, timeout_s: float = 90.0, cwd: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m app` (of the checkout `cwd`) on GENSERVE_HOST:GENSERVE_PORT of `env`, ready; stopped on exit."""
    base_url = f"http://{env['GENSERVE_HOST']}:{env['GENSERVE_PORT']}"
    process = start([sys.executable, "-m", "app"], log, env, cwd)
    try:
        wait_until_ready(f"{base_url}/readyz", process, log, timeout_s)
        yield process, base_url
    finally:
        stop(process)


def _process_table() -> tuple[dict[int, list[int]], dict[int, float]]:
    """Each process's children, and its user + system CPU seconds (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        process = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(process)
        times[process] = (int(fields[11]) + int(fields[12])) / tick
    return children, times


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children, _ = _process_table()
    found, pending = [], [pid]
    while pending:
        process = pending.pop()
        found.append(process)
        pending.extend(children.get(process, []))
    return found


def tree_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its descendants (Linux /proc), None elsewhere."""
    _, times = _process_table()
    if pid not in times:
        return None
    return sum(times.get(process, 0.0) for process in descendants(pid))


@contextlib.contextmanager
def paused(pids: Iterable[int]) -> Iterator[None]:
    """Every process in the trees under `pids` stopped (SIGSTOP) for the block and continued after, so that idle
    servers (LitServe's workers poll their queues at about a tenth of a core) take no CPU from a measurement."""
    family = [process for pid in pids for process in descendants(pid)]
    stopped = []
    try:
        for process in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGSTOP)
                stopped.append(process)
        yield
    finally:
        for process in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGCONT)


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a server and whatever it started (LitServe's workers outlive a SIGTERM to their parent)."""
    family = descendants(process.pid)
    stop(process)
    for pid in family[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
