"""The Docker image, built from the Dockerfile and run: it serves PNGs and gRPC as its non-root user and its
health check passes.

No Docker engine is needed: `podman build` (chroot isolation, host network) builds the image, on a Debian
bookworm base with Python 3.11 made by `debootstrap` when no registry can provide `python:3.11-slim-bookworm`
(the base is cached in podman's image store between runs), and the image's filesystem runs under `chroot` as
the image's user, with the image's environment, working folder and command. Needs root, podman and
debootstrap (`.ci/run` installs them); skipped without them, except under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import httpx
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from bench.processes import free_port, start, stop, wait_until_ready
from tests.app.helpers import decode_png
from tests.deploy.support import ROOT, require_tool

IMAGE = "localhost/genserve:test"
# The stand-in for python:3.11-slim-bookworm; GENSERVE_TEST_PYTHON_IMAGE names another (a registry's) instead.
BASE_IMAGE = "localhost/genserve-base:bookworm-py311"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
USER_ID = 10001
BUILD_TIMEOUT_S = 1800
READY_TIMEOUT_S = 240
# The build holds the installed virtual environment (about 2.5 GB) up to three times at once: in the build
# container, as the layer being committed, and in the image store.
BUILD_FREE_BYTES = 10 * 1024**3
AVAILABLE = 30  # TensorFlow Serving's ModelVersionStatus.State


@dataclass(frozen=True)
class Image:
    """A built image's filesystem, mounted read-write, and how the image says to run it."""

    root: Path
    env: dict[str, str]
    user: str
    workdir: str
    command: list[str]
    healthcheck: list[str]

    def chrooted(self, command: list[str]) -> list[str]:
        """`command` run inside the image as its user, from its working folder."""
        quoted = " ".join(_shell_quote(part) for part in command)
        return [
            "chroot",
            f"--userspec={self.user}",
            str(self.root),
            "/bin/sh",
            "-c",
            f"cd {_shell_quote(self.workdir)} && exec {quoted}",
        ]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _run(command: list[str], timeout_s: float, stdin: IO[bytes] | None = None) -> str:
    """`command`'s standard output; a failure shows the end of what it printed."""
    completed = subprocess.run(command, stdin=stdin, capture_output=True, timeout=timeout_s, check=False)
    output = completed.stdout.decode(errors="replace")
    assert completed.returncode == 0, (
        f"{command[:4]} failed:\n{output[-3000:]}\n{completed.stderr.decode()[-3000:]}"
    )
    return output


def _base_image(podman: str) -> str:
    """The image the Dockerfile's PYTHON_IMAGE names: a registry's, or a debootstrapped bookworm, cached."""
    named = os.environ.get("GENSERVE_TEST_PYTHON_IMAGE")
    if named:
        return named
    if subprocess.run([podman, "image", "exists", BASE_IMAGE], check=False).returncode == 0:
        return BASE_IMAGE
    debootstrap = require_tool("debootstrap", Path("/usr/sbin/debootstrap"))
    with tempfile.TemporaryDirectory(prefix="genserve-base-") as folder:
        rootfs = Path(folder) / "rootfs"
        _run(
            [debootstrap, "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs)],
            timeout_s=900,
        )
        archive = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _run([podman, "import", "--quiet", "-", BASE_IMAGE], timeout_s=600, stdin=archive.stdout)
        archive.wait()
    return BASE_IMAGE


def _check_free_disk(podman: str) -> None:
    """Fail before building, naming the folder and the sizes, where the build would run out of disk."""
    graph_root = _run([podman, "info", "--format", "{{.Store.GraphRoot}}"], timeout_s=60).strip()
    for folder in (Path(graph_root), Path(os.environ.get("TMPDIR", "/var/tmp"))):
        existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
        free = shutil.disk_usage(existing).free
        assert free >= BUILD_FREE_BYTES, (
            f"building the image needs {BUILD_FREE_BYTES / 1024**3:.0f} GB free under {existing}, "
            f"and {free / 1024**3:.1f} GB is free: `podman system prune --all` frees old images"
        )


def _remove_image(podman: str) -> None:
    """The built image and the layers it leaves behind; the cached base image stays."""
    subprocess.run([podman, "rmi", "--force", IMAGE], check=False, capture_output=True)
    subprocess.run([podman, "image", "prune", "--force"], check=False, capture_output=True)


def _build(podman: str) -> None:
    command = [podman, "build", "--isolation", "chroot", "--network", "host", "--format", "docker"]
    # A machine whose traffic goes through a proxy with its own certificate authority passes it to pip.
    for path in (Path("/etc/ssl/certs"), Path("/etc/pip.conf")):
        if path.exists():
            command += ["--volume", f"{path}:{path}:ro"]
    command += ["--build-arg", f"PYTHON_IMAGE={_base_image(podman)}", "--tag", IMAGE, str(ROOT)]
    _run(command, timeout_s=BUILD_TIMEOUT_S)


def _inspect(podman: str) -> dict[str, Any]:
    inspected: dict[str, Any] = json.loads(_run([podman, "image", "inspect", IMAGE], timeout_s=60))[0]
    return inspected


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("building and running the image needs root (podman, chroot), and CI must run it")
        pytest.skip("building and running the image needs root")
    podman = require_tool("podman")
    _remove_image(podman)  # what an interrupted run left
    _check_free_disk(podman)
    with ExitStack() as cleanup:
        cleanup.callback(_remove_image, podman)
        _build(podman)
        inspected = _inspect(podman)
        config = inspected["Config"]
        container = _run([podman, "create", IMAGE], timeout_s=60).strip()
        cleanup.callback(
            subprocess.run, [podman, "rm", "--force", container], check=False, capture_output=True
        )
        root = Path(_run([podman, "mount", container], timeout_s=60).strip())
        cleanup.callback(subprocess.run, [podman, "umount", container], check=False, capture_output=True)
        for system in ("proc", "dev"):
            _run(["mount", "--bind", f"/{system}", str(root / system)], timeout_s=30)
            cleanup.callback(subprocess.run, ["umount", "--lazy", str(root / system)], check=False)
        yield Image(
            root=root,
            env=dict(item.split("=", 1) for item in config["Env"]),
            user=str(config["User"]),
            workdir=str(config["WorkingDir"]),
            command=list(config["Cmd"]),
            # podman lists a Docker-format image's HEALTHCHECK beside its Config, Docker inside it.
            healthcheck=list(
                (inspected.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test", [])
            ),
        )


@pytest.fixture(scope="module")
def running(
    image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """The image's command running in its filesystem, on free ports of this machine (the host's network)."""
    env = image.env | {"GENSERVE_PORT": str(free_port()), "GENSERVE_GRPC_PORT": str(free_port())}
    log = tmp_path_factory.mktemp("image") / "service.log"
    process = start(image.chrooted(image.command), log, env=env)
    try:
        wait_until_ready(f"http://127.0.0.1:{env['GENSERVE_PORT']}/readyz", process, log, READY_TIMEOUT_S)
        yield process, env
    finally:
        stop(process)


def _service_pid(process: subprocess.Popen[bytes]) -> int:
    """The service's own process: `chroot` and the shell `exec` into it, so it is the process started."""
    return process.pid


def test_the_image_serves_png_grids_from_its_bundled_store(
    running: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    _, env = running
    response = httpx.post(
        f"http://127.0.0.1:{env['GENSERVE_PORT']}/generate", params={"n": 4, "seed": 1}, timeout=60
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert decode_png(response.content).shape[0] > 28  # a grid of the default model's 28-pixel digits


def test_the_image_serves_tensorflow_serving_grpc(
    running: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    _, env = running
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mnist-dcgan"
    states: list[int] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{env['GENSERVE_GRPC_PORT']}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        while states != [AVAILABLE] and time.monotonic() < deadline:  # the bundled models load one by one
            answer = stub.GetModelStatus(request, timeout=30)
            states = [status.state for status in answer.model_version_status]
            time.sleep(0.5)

    assert states == [AVAILABLE]


def test_the_service_runs_as_the_images_non_root_user(
    running: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    process, _ = running
    status = Path(f"/proc/{_service_pid(process)}/status").read_text()
    real, effective = (
        int(value)
        for value in next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:3]
    )

    assert (real, effective) == (USER_ID, USER_ID)


def test_the_images_health_check_passes(
    image: Image, running: tuple[subprocess.Popen[bytes], dict[str, str]]
) -> None:
    _, env = running
    assert image.healthcheck[:1] == ["CMD"], image.healthcheck
    completed = subprocess.run(
        image.chrooted(image.healthcheck[1:]), env=env, capture_output=True, timeout=60, check=False
    )

    assert completed.returncode == 0, completed.stderr[-2000:]


def test_the_image_stops_cleanly_on_sigterm(running: tuple[subprocess.Popen[bytes], dict[str, str]]) -> None:
    # The module's last test: the running service is not needed after it.
    process, _ = running
    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=60) == 0
