"""The real server process: slow or silent connections are closed, and uploads accepted before SIGTERM finish."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image
from tensorflow_serving.apis import get_model_status_pb2
from uvicorn.server import ServerState

from app.server.connections import DeadlineHttpToolsProtocol
from bench.processes import running_service, service_env
from tests.app.helpers import decode_png
from tests.app.protocol_helpers import serving
from tests.conftest import TINY_MODEL

TIMEOUT_S = 1
MAX_CONNECTIONS = 4


def status_request(model: str) -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    return request


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


def _read_all(connection: socket.socket, seconds: float = 10) -> bytes:
    connection.settimeout(seconds)
    received = b""
    try:
        while chunk := connection.recv(4096):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def test_connections_past_the_budget_get_503_with_retry_after_and_the_budget_comes_back(
    tiny_vae_store: Path, tmp_path: Path
) -> None:
    env = service_env(
        tiny_vae_store,
        max_connections=MAX_CONNECTIONS,
        max_connections_per_client=MAX_CONNECTIONS,
        keep_alive_s=60,
    )
    with running_service(env, tmp_path / "server.log") as (_, base_url):
        held = [connect(base_url) for _ in range(MAX_CONNECTIONS)]
        with connect(base_url) as extra:
            answer = _read_all(extra)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"\r\nretry-after: 1\r\n" in head.lower()
        assert json.loads(body)["error"]["code"] == "overloaded"

        for connection in held:
            connection.close()
        deadline = time.monotonic() + 30
        while True:  # the server notices the closed connections within moments
            try:
                metrics = httpx.get(f"{base_url}/metrics", timeout=5)
                if metrics.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "connections never came back"
            time.sleep(0.1)
        assert "genserve_http_connections_refused_total 1.0" in metrics.text


def _healthz_from(base_url: str, source: str) -> bytes:
    """The answer to GET /healthz on a connection made from the local address `source`."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return _read_all(connection)


def test_one_client_address_cannot_take_the_whole_budget(tiny_vae_store: Path, tmp_path: Path) -> None:
    # By default one address may hold half of the budget of eight.
    env = service_env(tiny_vae_store, max_connections=8, keep_alive_s=60)
    with running_service(env, tmp_path / "server.log") as (_, base_url):
        held = [connect(base_url) for _ in range(4)]
        refused = _healthz_from(base_url, "127.0.0.1")
        served = _healthz_from(base_url, "127.0.0.2")  # another client, on the same loopback
        for connection in held:
            connection.close()

    assert refused.startswith(b"HTTP/1.1 503 "), refused[:200]
    assert served.startswith(b"HTTP/1.1 200 "), served[:200]


class _Transport:
    """Just enough of an asyncio transport to see what the protocol does with a client that stopped reading."""

    def __init__(self) -> None:
        self.aborted = asyncio.Event()
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True
        self.aborted.set()

    def set_protocol(self, protocol: object) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closing = True


async def _a_client_that_stops_reading_is_dropped_after_the_write_timeout(resumes: bool) -> bool:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    protocol_class = DeadlineHttpToolsProtocol.configured(
        header_timeout_s=5, body_timeout_s=5, write_timeout_s=0.05
    )
    config = uvicorn.Config(app, http=protocol_class, lifespan="off")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.pause_writing()  # the socket's buffers are full: the client reads nothing
    if resumes:
        protocol.resume_writing()  # ... or it reads, in time
    try:
        await asyncio.wait_for(transport.aborted.wait(), timeout=2)
    except TimeoutError:
        pass
    protocol.connection_lost(None)
    return transport.aborted.is_set()


def test_a_client_that_stops_reading_its_answer_is_dropped_after_the_write_timeout() -> None:
    assert asyncio.run(_a_client_that_stops_reading_is_dropped_after_the_write_timeout(resumes=False))
    assert not asyncio.run(_a_client_that_stops_reading_is_dropped_after_the_write_timeout(resumes=True))


def test_grpc_refuses_connections_past_its_budget_and_closes_silent_ones(tiny_store: Path) -> None:
    # The test's own channel holds one connection, so two raw sockets fill a budget of three.
    with serving(tiny_store, max_connections=3, header_timeout_s=1) as served:
        assert served.models.GetModelStatus(status_request(TINY_MODEL), timeout=30).model_version_status
        host, port = served.grpc_address.split(":")
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            assert _read_all(extra) == b""  # closed at accept, before the server's HTTP/2 preface
        # The silent ones are closed when the handshake deadline passes.
        for connection in held:
            assert closed_within(connection, 15)
            connection.close()
        assert served.models.GetModelStatus(status_request(TINY_MODEL), timeout=30).model_version_status
