"""The Dockerfile (hadolint, structure, the shared install script), .dockerignore and the compose files."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.config import Settings
from tests.deploy.support import ROOT, load_yaml, require_tool, venv_tool

COMPOSE_FILES = {"cpu": ["docker-compose.yml"], "gpu": ["docker-compose.yml", "docker-compose.gpu.yml"]}
INSTALL_SCRIPT = ROOT / "scripts" / "install.sh"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n\s*",
        " ",
        "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")),
    )
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, arguments))
    return found


def arguments_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for found, arguments in stage if found == keyword]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    pairs = " ".join(arguments_of(stage, "ENV"))
    return dict(re.findall(r"(\w+)=(\S+)", pairs))


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint", Path(sys.prefix) / "bin" / "hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_image_is_multi_stage_and_runs_one_service_process_as_non_root() -> None:
    build, runtime = stages()
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), (
        "a slim Python base at least as new as the venv's"
    )
    assert arguments_of(build, "FROM") == ["${PYTHON_IMAGE} AS build"]
    assert arguments_of(runtime, "FROM") == ["${PYTHON_IMAGE} AS runtime"]
    assert any("--from=build" in arguments for arguments in arguments_of(runtime, "COPY"))
    [user] = arguments_of(runtime, "USER")
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), "a numeric, non-root user"
    [command] = arguments_of(runtime, "CMD")
    assert json.loads(command) == ["python", "-m", "app"]
    assert (ROOT / "app" / "__main__.py").is_file()
    environment = env_of(runtime)
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1" and environment["PYTHONUNBUFFERED"] == "1"
    assert environment["GENSERVE_HOST"] == "0.0.0.0"
    assert {
        name.removeprefix("GENSERVE_").lower() for name in environment if name.startswith("GENSERVE_")
    } <= set(Settings.model_fields)


def test_healthcheck_asks_readyz_on_the_service_port() -> None:
    runtime = stages()[-1]
    [healthcheck] = arguments_of(runtime, "HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"]
    assert "/readyz" in probe[2] and "GENSERVE_PORT" in probe[2]
    compile(probe[2], "HEALTHCHECK", "exec")
    assert env_of(runtime)["GENSERVE_PORT"] in " ".join(arguments_of(runtime, "EXPOSE")).split()


def test_image_serves_tensorflow_serving_grpc_on_an_exposed_port() -> None:
    runtime = stages()[-1]
    port = env_of(runtime)["GENSERVE_GRPC_PORT"]
    assert port == "8500"  # TensorFlow Serving's gRPC port, so its clients keep their address
    assert port in " ".join(arguments_of(runtime, "EXPOSE")).split()


def test_model_store_is_baked_in_where_the_settings_point() -> None:
    runtime = stages()[-1]
    store = env_of(runtime)["GENSERVE_MODEL_STORE"]
    assert any(
        arguments.split()[-1].rstrip("/") == store
        for arguments in arguments_of(runtime, "COPY")
        if arguments.startswith("model_store")
    )


def test_build_stage_installs_with_the_make_install_script() -> None:
    build = stages()[0]
    [device] = [arguments for arguments in arguments_of(build, "ARG") if arguments.startswith("DEVICE")]
    assert device == "DEVICE=cpu"
    assert arguments_of(build, "RUN")[-1] == 'sh scripts/install.sh "$DEVICE"'
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\tPYTHON=\$\(BIN\)/python sh scripts/install.sh dev$", makefile, re.MULTILINE)


def copy_sources(stage: list[tuple[str, str]]) -> set[str]:
    """What a stage copies from the build context (every COPY argument but the last and the options)."""
    sources: set[str] = set()
    for arguments in arguments_of(stage, "COPY"):
        words = arguments.split()
        if not any(word.startswith("--from") for word in words):
            sources.update(word.rstrip("/") for word in words[:-1] if not word.startswith("--"))
    return sources


def test_build_stage_copies_every_package_the_project_installs() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    [include] = re.findall(r"^include = \[(.*)\]$", pyproject, re.MULTILINE)
    packages = {pattern.rstrip("*") for pattern in re.findall(r'"([^"]+)"', include)}
    [readme] = re.findall(r'^readme = "(.*)"$', pyproject, re.MULTILINE)
    assert packages == {"app", "training", "genserve"}
    assert packages | {"pyproject.toml", readme, "scripts/install.sh"} <= copy_sources(stages()[0])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("dev", "-e .[dev]"), ("cpu", "."), ("gpu", ". tensorflow[and-cuda]"), ("", ".")],
)
def test_install_script_modes(tmp_path: Path, mode: str, expected: str) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\necho "$@"\n')
    fake_python.chmod(0o755)
    result = subprocess.run(
        ["sh", str(INSTALL_SCRIPT), *([mode] if mode else [])],
        env={**os.environ, "PYTHON": str(fake_python)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"-m pip install {expected}"


def test_install_script_rejects_unknown_modes() -> None:
    result = subprocess.run(["sh", str(INSTALL_SCRIPT), "tpu"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/")
            for pattern in patterns
        )

    copied = set().union(*(copy_sources(stage) for stage in stages()))
    assert copied and not [path for path in copied if ignored(path)]
    for path in (".git", ".venv", "runs", "tests", "app/__pycache__", "model_store/mnist/.tmp-abc"):
        assert ignored(path), path


def compose_schema() -> dict[str, Any]:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.gpu.yml"])
def test_compose_file_matches_the_compose_specification(name: str) -> None:
    jsonschema.validate(load_yaml(ROOT / name), compose_schema())


def test_compose_schema_check_can_fail() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"services": {"api": {"image": "x", "ports": [{"targett": 8000}]}}}, compose_schema()
        )


def compose_config(variant: str) -> dict[str, Any]:
    """The project as Docker Compose resolves it (interpolation, merging, all profiles), with a clean env."""
    compose = require_tool("docker-compose", venv_tool("docker-compose"))
    files = [argument for name in COMPOSE_FILES[variant] for argument in ("-f", name)]
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "GENSERVE_"))
    }
    result = subprocess.run(
        [compose, *files, "--profile", "*", "config", "--format", "json"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def duration_s(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"([\d.]+)(ms|h|m|s)", text))


@pytest.mark.parametrize("variant", sorted(COMPOSE_FILES))
def test_compose_api_serves_the_read_only_store_and_drains_on_stop(variant: str) -> None:
    api = compose_config(variant)["services"]["api"]
    http, grpc = api["ports"]
    assert http["target"] == 8000 and http["published"] == "8000"
    assert grpc["target"] == 8500 and grpc["published"] == "8500"  # the image's GENSERVE_GRPC_PORT
    [store] = api["volumes"]
    assert store["type"] == "bind" and store["source"] == str(ROOT / "model_store")
    assert store["target"] == api["environment"]["GENSERVE_MODEL_STORE"] and store["read_only"] is True
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert duration_s(api["stop_grace_period"]) > float(api["environment"]["GENSERVE_SHUTDOWN_GRACE_S"])


@pytest.mark.parametrize("variant", sorted(COMPOSE_FILES))
def test_compose_trainer_writes_into_the_store_the_api_reads(variant: str) -> None:
    services = compose_config(variant)["services"]
    trainer, api = services["trainer"], services["api"]
    assert trainer["profiles"] == ["train"]
    assert trainer["image"] == api["image"]
    mounts = {volume["target"]: volume for volume in trainer["volumes"]}
    [api_store] = api["volumes"]
    store = trainer["command"][trainer["command"].index("--store") + 1]
    assert mounts[store]["source"] == api_store["source"] and not mounts[store].get("read_only", False)
    assert trainer["command"][:4] == ["python", "-m", "training", "train"]
    assert trainer["healthcheck"]["disable"] is True


def test_compose_monitoring_mounts_the_deploy_files() -> None:
    services = compose_config("cpu")["services"]
    prometheus = {volume["target"]: volume["source"] for volume in services["prometheus"]["volumes"]}
    assert prometheus["/etc/prometheus"] == str(ROOT / "deploy" / "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = {volume["target"]: volume["source"] for volume in services["grafana"]["volumes"]}
    assert grafana["/etc/grafana/provisioning"] == str(ROOT / "deploy" / "grafana" / "provisioning")
    assert all(
        Path(source).exists()
        for source in [*prometheus.values(), *grafana.values()]
        if source.startswith("/")
    )


def test_compose_gpu_override_reserves_a_gpu_and_builds_the_gpu_image() -> None:
    cpu, gpu = compose_config("cpu")["services"], compose_config("gpu")["services"]
    for name in ("api", "trainer"):
        assert "deploy" not in cpu[name]
        assert cpu[name]["build"]["args"] == {"DEVICE": "cpu"}
        assert gpu[name]["build"]["args"] == {"DEVICE": "gpu"}
        [device] = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert gpu[name]["image"] != cpu[name]["image"]
    Settings.model_validate(
        {key.removeprefix("GENSERVE_").lower(): value for key, value in gpu["api"]["environment"].items()}
    )
