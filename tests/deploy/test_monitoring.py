"""The Grafana dashboard, Prometheus alerts and autoscaling metrics read only series the service exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.deploy.support import (
    ADAPTER_RULES,
    ALERT_RULES,
    DASHBOARD,
    DEPLOY,
    K8S,
    PROMETHEUS_CONFIG,
    ROOT,
    exported_series_names,
    load_yaml,
    metric_names,
    unknown_names,
)


@pytest.fixture(scope="module")
def exported(client: TestClient) -> set[str]:
    """Series names on the real /metrics page after some traffic, successful and not."""
    assert client.post("/generate", params={"n": 2, "seed": 3}).status_code == 200
    assert client.get("/interpolate", params={"start": 1, "end": 2, "steps": 2}).status_code == 200
    assert client.post("/generate", params={"n": 0}).status_code == 422
    response = client.get("/metrics")
    assert response.status_code == 200
    return exported_series_names(response.text)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_expressions() -> dict[str, list[str]]:
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]] for panel in dashboard()["panels"]
    }


def alert_expressions() -> list[str]:
    return [rule["expr"] for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def test_metric_names_ignore_strings_and_keep_suffixes() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (le) (rate(genserve_queue_wait_seconds_bucket{job="genserve_x"}[5m])))'
        " / on() group_left genserve_ready"
    )
    assert metric_names(expression) == {"genserve_queue_wait_seconds_bucket", "genserve_ready"}


def test_exported_names_follow_each_metric_type() -> None:
    page = (
        "# HELP genserve_things_total Things.\n# TYPE genserve_things_total counter\n"
        "# HELP genserve_level Level.\n# TYPE genserve_level gauge\ngenserve_level 1.0\n"
        "# HELP genserve_wait_seconds Wait.\n# TYPE genserve_wait_seconds histogram\n"
    )
    names = exported_series_names(page)
    assert names == {
        "genserve_things_total",
        "genserve_level",
        "genserve_wait_seconds_bucket",
        "genserve_wait_seconds_sum",
        "genserve_wait_seconds_count",
    }
    assert unknown_names(["rate(genserve_things[5m])", "genserve_level_total"], names) == {
        "rate(genserve_things[5m])": {"genserve_things"},
        "genserve_level_total": {"genserve_level_total"},
    }


def test_dashboard_reads_only_exported_series(exported: set[str]) -> None:
    expressions = [expression for exprs in panel_expressions().values() for expression in exprs]
    variable_queries = [variable["definition"] for variable in dashboard()["templating"]["list"]]
    assert unknown_names(expressions + variable_queries, exported) == {}
    assert len(expressions) >= 6


def test_dashboard_has_the_serving_panels() -> None:
    panels = panel_expressions()
    read = {
        title: set().union(*(metric_names(expression) for expression in exprs))
        for title, exprs in panels.items()
    }
    required = {
        "requests/s": "genserve_http_requests_total",
        "images/s": "genserve_images_generated_total",
        "batch size": "genserve_batch_size_images_sum",
        "queue depth": "genserve_queue_depth_images",
        "rejections": "genserve_rejections_total",
        "quota": "genserve_quota_refusals_total",
    }
    for words, metric in required.items():
        assert any(words in title.lower() and metric in names for title, names in read.items()), words
    [latency] = [exprs for title, exprs in panels.items() if "latency" in title.lower()]
    quantiles = {
        float(q) for expression in latency for q in re.findall(r"histogram_quantile\(([\d.]+)", expression)
    }
    assert quantiles == {0.5, 0.99}
    assert all("genserve_http_request_duration_seconds_bucket" in expression for expression in latency)


def test_dashboard_uses_the_provisioned_datasource() -> None:
    [datasource] = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    board = dashboard()
    assert board["uid"] == "genserve"
    panel_sources = [panel["datasource"] for panel in board["panels"]]
    target_sources = [target["datasource"] for panel in board["panels"] for target in panel["targets"]]
    assert all(
        source == {"type": "prometheus", "uid": datasource["uid"]}
        for source in panel_sources + target_sources
    )
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards() -> None:
    [provider] = load_yaml(DEPLOY / "grafana/provisioning/dashboards/genserve.yml")["providers"]
    grafana = load_yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_alerts_read_only_exported_series(exported: set[str]) -> None:
    expressions = alert_expressions()
    assert unknown_names(expressions, exported) == {}
    assert sum(bool(metric_names(expression)) for expression in expressions) >= 3


def test_prometheus_scrapes_the_compose_api_service() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    [static] = job["static_configs"]
    assert static["targets"] == ["api:8000"]
    assert "api" in load_yaml(ROOT / "docker-compose.yml")["services"]
    assert config["rule_files"] == [ALERT_RULES.name]


def test_autoscaling_metric_is_exported(exported: set[str]) -> None:
    [rule] = load_yaml(ADAPTER_RULES)["rules"]
    assert unknown_names([rule["seriesQuery"], rule["metricsQuery"]], exported) == {}
    served = rule["name"]["as"]
    hpa = load_yaml(K8S / "prometheus-adapter" / "hpa.yaml")
    pods_metrics = [
        metric["pods"]["metric"]["name"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"
    ]
    assert pods_metrics == [served]
    assert served in exported
