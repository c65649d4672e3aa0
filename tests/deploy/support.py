"""Helpers for the deployment tests: repository paths, YAML loading, external tools, metric names in PromQL."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "genserve.json"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
ADAPTER_RULES = DEPLOY / "prometheus-adapter" / "rules.yaml"

# Sample names a metric family of each type puts on a /metrics page (besides any `_created` series).
_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "unknown": ("",),
}
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:])genserve_[A-Za-z0-9_:]*")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_manifest(path: Path) -> dict[str, Any]:
    """A YAML file of one Kubernetes object."""
    loaded: dict[str, Any] = load_yaml(path)
    return loaded


def only_container(manifest: dict[str, Any]) -> dict[str, Any]:
    """The one container of a Deployment's or Job's pod template."""
    [only] = manifest["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for document in load_yaml_documents(path):
            yield path, document


def require_tool(name: str, *candidates: Path) -> str:
    """The path of an external tool: skipped when it is missing, except under CI, which must run it."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI must run this test")
    pytest.skip(message)


def venv_tool(name: str) -> Path:
    """Where `make` puts a tool it unpacks itself (beside the virtual environment's bin/)."""
    return Path(sys.prefix) / "tools" / name


def metric_names(expression: str) -> set[str]:
    """The genserve_* series a PromQL expression (or a series selector) reads; string literals don't count."""
    return set(_IDENTIFIER.findall(_STRING_LITERAL.sub('""', expression)))


def exported_series_names(metrics_page: str) -> set[str]:
    """Every series name a /metrics page can carry, including families that have no samples yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_page):
        names.update(family.name + suffix for suffix in _SERIES_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def unknown_names(expressions: Iterable[str], exported: set[str]) -> dict[str, set[str]]:
    """Expression -> the genserve_* names it reads that the service does not export."""
    unknown = {expression: metric_names(expression) - exported for expression in expressions}
    return {expression: names for expression, names in unknown.items() if names}
