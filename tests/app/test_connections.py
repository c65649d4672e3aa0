"""The real server process: slow or silent connections are closed, and uploads accepted before SIGTERM finish."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.processes import running_service, service_env
from tests.app.helpers import decode_png

TIMEOUT_S = 1


@pytest.fixture(scope="module")
def server(
    tiny_vae_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    env = service_env(
        tiny_vae_store,
        keep_alive_s=TIMEOUT_S,
        header_timeout_s=TIMEOUT_S,
        body_timeout_s=TIMEOUT_S,
        shutdown_grace_s=10,
    )
    with running_service(env, tmp_path_factory.mktemp("server") / "server.log") as started:
        yield started


def connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    return connection


def closed_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection (EOF) within `seconds`."""
    connection.settimeout(seconds)
    try:
        while True:
            data = connection.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow",
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    ],
    ids=["silent", "partial-headers", "partial-body"],
)
def test_slow_or_silent_connections_are_closed(
    server: tuple[subprocess.Popen[bytes], str], sent: bytes
) -> None:
    _, base_url = server
    with connect(base_url) as connection:
        connection.sendall(sent)
        assert closed_within(connection, TIMEOUT_S + 4)


def test_an_active_keep_alive_connection_is_served(server: tuple[subprocess.Popen[bytes], str]) -> None:
    _, base_url = server
    with httpx.Client(base_url=base_url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200


def test_upload_accepted_before_sigterm_is_answered(tiny_vae_store: Path, tmp_path: Path) -> None:
    env = service_env(tiny_vae_store, shutdown_grace_s=10)
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 200).save(buffer, format="PNG")
    request = httpx.Request(
        "POST", "http://x/reconstruct", files=[("image", ("digit.png", buffer.getvalue(), "image/png"))]
    )
    body = request.read()
    head = (
        f"POST /reconstruct HTTP/1.1\r\nHost: x\r\nContent-Type: {request.headers['content-type']}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with (
        running_service(env, tmp_path / "server.log") as (process, base_url),
        connect(base_url) as connection,
    ):
        connection.sendall(head + body[:100])  # the request is in, its upload still arriving
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        connection.sendall(body[100:])
        response = _read_response(connection)
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
        image = decode_png(response.split(b"\r\n\r\n", 1)[1])
        assert image.shape[:2] == (28 + 4, 28 + 4)
        assert process.wait(timeout=20) == 0


def _read_response(connection: socket.socket) -> bytes:
    connection.settimeout(20)
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
