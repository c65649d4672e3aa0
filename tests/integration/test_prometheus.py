"""Prometheus against the real service: promtool on /metrics and the configs, and a live scrape.

promtool and prometheus come from Debian's `prometheus` package; without them these tests are skipped, except
under CI (the CI variable set), which installs the package and must run them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from bench.processes import free_port, service_env, start, stop, wait_until_ready
from tests.deploy.support import ALERT_RULES, DASHBOARD, PROMETHEUS_CONFIG, ROOT, require_tool

SCRAPE_INTERVAL_S = 1
# Grafana's variables, replaced by what they stand for so promtool can parse the dashboard's queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$model": ".*"}


def promtool(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_promtool_finds_no_problem_on_the_metrics_page(client: TestClient) -> None:
    assert client.post("/generate", params={"n": 3, "seed": 1}).status_code == 200
    assert client.post("/generate", params={"n": 0}).status_code == 422
    page = client.get("/metrics")
    assert page.status_code == 200
    assert "genserve_images_generated_total" in page.text
    result = promtool("check", "metrics", stdin=page.text)
    # promtool prints its lint findings and exits 0 for some of them: any output is a finding.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", (
        result.stdout + result.stderr
    )


def test_promtool_accepts_the_prometheus_config_and_its_alerts() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ALERT_RULES.name in result.stdout  # the rule file was found and checked too


def test_alert_rules_fire_on_their_own_series() -> None:
    result = promtool("test", "rules", str(ALERT_RULES.with_name("alerts.test.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            assert "$" not in expression, f"unknown Grafana variable in {target['expr']}"
            rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expression})
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.fixture(scope="module")
def service_and_prometheus(
    tiny_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """`python -m app` over the tiny store, and a Prometheus scraping it every second; both on loopback."""
    prometheus_binary = require_tool("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    service_port, prometheus_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                    "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                },
                "scrape_configs": [
                    {"job_name": "genserve", "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]}
                ],
            }
        )
    )
    genserve_env = service_env(tiny_store, service_port)
    service_log, prometheus_log = tmp_path / "service.log", tmp_path / "prometheus.log"
    processes = []
    try:
        processes.append(start([sys.executable, "-m", "app"], service_log, genserve_env))
        processes.append(
            start(
                [
                    prometheus_binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--log.level=warn",
                ],
                prometheus_log,
            )
        )
        service_url, prometheus_url = (
            f"http://127.0.0.1:{service_port}",
            f"http://127.0.0.1:{prometheus_port}",
        )
        wait_until_ready(f"{prometheus_url}/-/ready", processes[1], prometheus_log, timeout_s=30)
        wait_until_ready(f"{service_url}/readyz", processes[0], service_log, timeout_s=60)
        yield service_url, prometheus_url
    finally:
        for process in processes:
            stop(process)


def query(prometheus_url: str, expression: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expression}, timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_running_service(service_and_prometheus: tuple[str, str]) -> None:
    service_url, prometheus_url = service_and_prometheus
    for seed in (1, 2):
        response = httpx.post(f"{service_url}/generate", params={"n": 4, "seed": seed}, timeout=30)
        assert response.status_code == 200
    deadline = time.monotonic() + 10 * SCRAPE_INTERVAL_S
    up: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        up = query(prometheus_url, 'up{job="genserve"}')
        images = query(prometheus_url, 'sum(genserve_images_generated_total{job="genserve"})')
        if up and images and float(images[0]["value"][1]) >= 8:
            break
        time.sleep(SCRAPE_INTERVAL_S / 2)
    assert [sample["value"][1] for sample in up] == ["1"]
    assert images and float(images[0]["value"][1]) == 8


def test_image_healthcheck_command_probes_readiness(service_and_prometheus: tuple[str, str]) -> None:
    service_url, _ = service_and_prometheus
    dockerfile = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    [healthcheck] = re.findall(r"^HEALTHCHECK .* CMD (\[.*\])$", dockerfile, re.MULTILINE)
    command = json.loads(healthcheck)
    assert command[0] == "python"
    port = service_url.rsplit(":", 1)[1]
    ready = subprocess.run(
        [sys.executable, *command[1:]], env={**os.environ, "GENSERVE_PORT": port}, timeout=30
    )
    assert ready.returncode == 0
    missing = subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "GENSERVE_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
    )
    assert missing.returncode != 0
