"""Worst-case requests against a real server: status, time, and the server's peak and settled memory.

``python -m bench hardening [--checkout PATH] [--store PATH]`` starts ``python -m app`` from a checkout (this
one by default, or another, e.g. an older commit in a ``git worktree``, to compare) over a copy of the bundled
store, sends each probe and prints one row per probe. Memory is the server's resident set (RSS): before the
probe, its peak while the probe ran (sampled every 10 ms), and after it settled (2 s later).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import resource
import shutil
import signal
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.processes import running_service, service_env

ROOT = Path(__file__).resolve().parent.parent
_SAMPLE_S = 0.01
_SETTLE_S = 2.0
_MIB = 1024 * 1024
GAN, VAE = "mnist-dcgan", "mnist-vae"


@dataclass(frozen=True)
class Outcome:
    result: str
    seconds: float
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_settled_mib: float = 0.0


@dataclass
class Server:
    base_url: str
    pid: int
    process: object


Probe = Callable[[Server], str]


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc), 0 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(server: Server, probe: Probe) -> Outcome:
    """Run `probe`, sampling the server's RSS meanwhile."""
    before = rss_mib(server.pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(server.pid))
            time.sleep(_SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = probe(server)
    except Exception as error:  # a probe that breaks the server is a result too
        result = f"error: {type(error).__name__}: {error}"[:120]
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    time.sleep(_SETTLE_S)
    return Outcome(result, seconds, before, peak, rss_mib(server.pid))


# --- payloads ---------------------------------------------------------------------------------------------


def big_png(side: int, channels: int = 4) -> bytes:
    """A `side`x`side` all-zero PNG (8-bit RGBA by default): tiny on disk, huge once decoded."""
    raw = zlib.compress((b"\x00" + b"\x00" * side * channels) * side, 9)
    colour_type = {1: 0, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, colour_type, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def small_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _status(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    return (
        f"{response.status_code} {message[:60]!r}"
        if response.status_code >= 400
        else str(response.status_code)
    )


# --- probes -------------------------------------------------------------------------------------------------


def huge_json(server: Server) -> str:
    """1: a 50 MB JSON body on POST /generate, with /healthz timed meanwhile."""
    body = b'{"latents": [' + b",".join([b"[0.1, 0.2, 0.3, 0.4]"] * 2_400_000) + b"]}"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sent = pool.submit(
            httpx.post,
            f"{server.base_url}/generate",
            content=body,
            headers={"content-type": "application/json"},
            timeout=120,
        )
        time.sleep(0.2)
        started = time.perf_counter()
        health = httpx.get(f"{server.base_url}/healthz", timeout=120)
        health_ms = (time.perf_counter() - started) * 1000
        response = sent.result()
    return f"{_status(response)}; /healthz {health.status_code} in {health_ms:.0f} ms"


def pixel_bombs(server: Server) -> str:
    """2: 16 concurrent uploads of a 4096x4096 RGBA PNG (about 65 kB each)."""
    data = big_png(4096)

    def send(_: int) -> str:
        files = [("image", ("bomb.png", data, "image/png"))]
        return _status(httpx.post(f"{server.base_url}/encode?model={VAE}", files=files, timeout=300))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(16)))
    return f"{len(data) // 1024} kB each; " + "; ".join(sorted(set(results)))


def unusual_numbers(server: Server) -> str:
    """4: version=², a 5,000-digit version, label=², and JSON true for n."""
    url = f"{server.base_url}/generate"
    results = [
        _status(httpx.post(url, params={"version": "²"}, timeout=30)),
        _status(httpx.post(url, params={"version": "9" * 5000}, timeout=30)),
        _status(httpx.post(url, params={"model": "mnist-cdcgan", "label": "²"}, timeout=30)),
        _status(httpx.post(url, json={"n": True}, timeout=30)),
    ]
    return " | ".join(result.split(" ")[0] for result in results)


def admin_with_empty_token(server: Server) -> str:
    """5: GENSERVE_ADMIN_TOKEN= (empty) and a bearer token of spaces (sent raw: clients refuse to)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    request = (
        f"POST /admin/models/{GAN}/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer  \t\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request.encode())
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    return reply.split(b"\r\n", 1)[0].decode(errors="replace").removeprefix("HTTP/1.1 ")


def idle_connection(server: Server) -> str:
    """7: a connection that sends half its headers, then nothing."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow")
        connection.settimeout(20)
        started = time.perf_counter()
        try:
            while connection.recv(4096):
                pass
            return f"closed by the server after {time.perf_counter() - started:.1f} s"
        except TimeoutError:
            return "still open after 20 s"


def leaks(server: Server) -> str:
    """8: absolute paths in /models or in the 503 of a model whose only version failed."""
    listing = httpx.get(f"{server.base_url}/models", timeout=30).text
    failed = httpx.post(f"{server.base_url}/generate", params={"model": "broken"}, timeout=30)
    leaked = [name for name, text in (("/models", listing), ("503", failed.text)) if "/tmp" in text]
    retry = "with" if "retry-after" in failed.headers else "without"
    return f"paths in: {', '.join(leaked) or 'none'}; 503 {retry} Retry-After"


def contract(server: Server) -> str:
    """9: non-UTF-8 body, a model name with a newline, Multipart/Form-Data, an oversized POST /interpolate."""
    url = server.base_url
    not_utf8 = httpx.post(
        f"{url}/generate", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    newline = httpx.post(f"{url}/generate", params={"model": f"{GAN}\n"})
    request = httpx.Request("POST", f"{url}/encode", files=[("image", ("a.png", small_png(), "image/png"))])
    body = request.read()
    mixed_case = request.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    cased = httpx.post(f"{url}/encode?model={VAE}", content=body, headers={"content-type": mixed_case})
    padding = ("note", (None, b"x" * 30 * _MIB, "text/plain"))
    files = [
        ("start", ("a.png", small_png(), "image/png")),
        ("end", ("b.png", small_png(), "image/png")),
        padding,
    ]
    oversized = httpx.post(f"{url}/interpolate?model={VAE}", files=files, timeout=60)
    return " | ".join(str(response.status_code) for response in (not_utf8, newline, cased, oversized))


FLOOD_CONNECTIONS = 20_000
_FLOOD_CHECKS = 20


def connection_flood(server: Server) -> str:
    """10: one client opens FLOOD_CONNECTIONS connections (fewer if its open-file limit is lower) that send POST /generate headers and one body byte of
    ten; meanwhile another client (another loopback address) asks for /healthz. The flood is closed before the
    memory settles."""
    # This process needs descriptors of its own for the other client.
    count = min(FLOOD_CONNECTIONS, _raise_open_file_limit() - 256)
    host, port = server.base_url.removeprefix("http://").split(":")
    head = (
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"
    )
    flood: list[socket.socket] = []
    refused = failed = 0
    try:
        for _ in range(count):
            try:
                connection = socket.create_connection((host, int(port)), timeout=5)
                connection.sendall(head)
                flood.append(connection)
            except OSError:
                failed += 1
        for connection in flood:  # what the server said to each, if anything yet
            connection.setblocking(False)
            try:
                if connection.recv(16).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except (BlockingIOError, OSError):
                pass
        slowest, statuses = 0.0, []
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as other:
            for _ in range(_FLOOD_CHECKS):
                started = time.perf_counter()
                statuses.append(other.get(f"{server.base_url}/healthz").status_code)
                slowest = max(slowest, time.perf_counter() - started)
    finally:
        for connection in flood:
            connection.close()
    answered = ",".join(sorted({str(status) for status in statuses}))
    return (
        f"{len(flood)} open, {refused} answered 503 at once, {failed} failed to connect; other client: "
        f"{answered}, slowest {slowest * 1000:.0f} ms"
    )


def _raise_open_file_limit() -> int:
    """This process's open-file limit, raised to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- servers ------------------------------------------------------------------------------------------------


def _store_copy(source: Path, folder: Path, *, odd: bool) -> Path:
    store = folder / "store"
    for name in (GAN, VAE, "mnist-cdcgan"):
        shutil.copytree(source / name, store / name)
    broken = store / "broken" / "1"
    shutil.copytree(next((source / GAN).glob("[0-9]*")), broken)
    (broken / "saved_model.pb").write_bytes(b"broken")
    if odd:
        (store / ("a" * 100)).mkdir()
        (store / GAN / "²").mkdir()
    return store


@contextmanager
def server(checkout: Path, store: Path, folder: Path, **settings: str) -> Iterator[Server]:
    env = service_env(store, clean=True, default_model=GAN, log_level="warning", load_retry_initial_s=300)
    env |= settings
    with running_service(env, folder / f"server-{env['GENSERVE_PORT']}.log", cwd=checkout) as (process, url):
        _wait_until_loaded(url)
        yield Server(url, process.pid, process)


def _wait_until_loaded(url: str, timeout_s: float = 120.0) -> None:
    """Until every model but the broken one has a version serving (ready means only the default one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = httpx.get(f"{url}/models", timeout=10).json()["models"]
        pending = [m for m in models if m["name"] != "broken" and m["latest_available"] is None]
        if not pending:
            return
        time.sleep(0.2)
    raise TimeoutError("models did not load")


def odd_store_start(checkout: Path, source: Path, folder: Path) -> Outcome:
    """3: odd folders in the store at start-up."""
    store = _store_copy(source, folder / "odd", odd=True)
    started = time.perf_counter()
    try:
        with server(checkout, store, folder):
            return Outcome("ready, serving", time.perf_counter() - started)
    except Exception as error:
        return Outcome(f"never ready ({type(error).__name__})", time.perf_counter() - started)


def sigterm_upload(checkout: Path, store: Path, folder: Path) -> Outcome:
    """6: SIGTERM while a /reconstruct upload is still arriving."""
    request = httpx.Request(
        "POST", "http://x/reconstruct", files=[("image", ("a.png", small_png(), "image/png"))]
    )
    body = request.read()
    head = (
        f"POST /reconstruct?model={VAE} HTTP/1.1\r\nHost: x\r\nContent-Type: {request.headers['content-type']}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    with server(checkout, store, folder, GENSERVE_SHUTDOWN_GRACE_S="10") as running:
        host, port = running.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as connection:
            connection.sendall(head + body[:100])
            time.sleep(0.3)
            os.kill(running.pid, signal.SIGTERM)
            time.sleep(0.5)
            connection.sendall(body[100:])
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
    return Outcome(reply.split(b"\r\n", 1)[0].decode(errors="replace"), time.perf_counter() - started)


def run(checkout: Path, source: Path) -> list[tuple[str, Outcome]]:
    rows: list[tuple[str, Outcome]] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store = _store_copy(source, folder / "plain", odd=False)
        for label, probe in (("1 50 MB JSON body", huge_json), ("2 16 pixel bombs", pixel_bombs)):
            with server(checkout, store, folder) as running:
                rows.append((label, measure(running, probe)))
        rows.append(("3 odd store folders", odd_store_start(checkout, source, folder)))
        with server(checkout, store, folder, GENSERVE_ADMIN_TOKEN="") as running:
            for label, probe in (
                ("4 unusual numbers", unusual_numbers),
                ("5 empty admin token", admin_with_empty_token),
                ("7 half-sent headers", idle_connection),
                ("8 internals in errors", leaks),
                ("9 contract", contract),
                ("10 connection flood", connection_flood),
            ):
                rows.append((label, measure(running, probe)))
        rows.append(("6 SIGTERM mid-upload", sigterm_upload(checkout, store, folder)))
    return rows


def format_table(rows: Sequence[tuple[str, Outcome]]) -> str:
    lines = [
        "| probe | result | time s | RSS before MiB | peak MiB | settled MiB |",
        "|---|---|---|---|---|---|",
    ]
    for label, outcome in rows:
        memory = (
            f"{outcome.rss_before_mib:.0f} | {outcome.rss_peak_mib:.0f} | {outcome.rss_settled_mib:.0f}"
            if outcome.rss_before_mib
            else "– | – | –"
        )
        lines.append(f"| {label} | {outcome.result} | {outcome.seconds:.1f} | {memory} |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hardening", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose service runs")
    parser.add_argument("--store", type=Path, default=ROOT / "model_store", help="the bundled store to copy")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    options = parser.parse_args(argv)
    rows = run(options.checkout.resolve(), options.store.resolve())
    print(format_table(rows))
    if options.json:
        options.json.write_text(
            json.dumps([{"probe": label, **vars(outcome)} for label, outcome in rows], indent=2)
        )
    return 0
