"""Kubernetes manifests: valid against the Kubernetes API schemas, and consistent with each other and the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from app.config import Settings
from app.main import create_app
from tests.deploy.support import K8S, k8s_documents, load_manifest, load_yaml_documents, only_container

# The oldest Kubernetes these manifests support, and the newest the bundled schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SCHEMA_FILES = sorted(
    {
        path
        for path, document in k8s_documents()
        if (document["apiVersion"], document["kind"]) not in CUSTOM_KINDS
    }
)
DEPLOYMENTS = {variant: K8S / variant / "deployment.yaml" for variant in ("cpu", "gpu")}


def app_routes() -> set[str]:
    """The service's HTTP paths, as its OpenAPI schema lists them."""
    return set(create_app(Settings()).openapi()["paths"])


def env(deployment: dict[str, Any]) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in only_container(deployment)["env"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda path: str(path.relative_to(K8S)))
def test_manifest_matches_the_kubernetes_schema(path: Path, version: str) -> None:
    for manifest in load_yaml_documents(path):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_schema_check_rejects_a_misspelt_field() -> None:
    deployment = load_manifest(DEPLOYMENTS["cpu"])
    only_container(deployment)["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_every_manifest_is_checked() -> None:
    kinds = {(manifest["apiVersion"], manifest["kind"]) for _, manifest in k8s_documents()}
    assert kinds == {
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "Service"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    }


@pytest.mark.parametrize("variant", sorted(DEPLOYMENTS))
def test_probes_and_scrape_path_are_real_routes(variant: str) -> None:
    deployment = load_manifest(DEPLOYMENTS[variant])
    spec = only_container(deployment)
    routes = app_routes()
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert {"/readyz", "/healthz", annotations["prometheus.io/path"]} <= routes


@pytest.mark.parametrize("variant", sorted(DEPLOYMENTS))
def test_ports_agree_from_settings_to_service(variant: str) -> None:
    deployment = load_manifest(DEPLOYMENTS[variant])
    spec = only_container(deployment)
    port, grpc = spec["ports"]
    assert port["containerPort"] == int(env(deployment)["GENSERVE_PORT"])
    assert grpc["containerPort"] == int(env(deployment)["GENSERVE_GRPC_PORT"])
    assert env(deployment)["GENSERVE_HOST"] == "0.0.0.0"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert spec[probe]["httpGet"]["port"] == port["name"]
    service_http, service_grpc = load_manifest(K8S / "service.yaml")["spec"]["ports"]
    assert service_http["targetPort"] == port["name"]
    assert (service_grpc["targetPort"], service_grpc["appProtocol"]) == (grpc["name"], "grpc")


@pytest.mark.parametrize("variant", sorted(DEPLOYMENTS))
def test_env_names_are_real_settings(variant: str) -> None:
    deployment = load_manifest(DEPLOYMENTS[variant])
    fields = {f"GENSERVE_{name.upper()}" for name in Settings.model_fields}
    ours = {name for name in env(deployment) if name.startswith("GENSERVE_")}
    assert ours <= fields
    Settings.model_validate(
        {
            name.removeprefix("GENSERVE_").lower(): value
            for name, value in env(deployment).items()
            if name in ours
        }
    )


@pytest.mark.parametrize("variant", sorted(DEPLOYMENTS))
def test_pod_outlives_its_drain(variant: str) -> None:
    deployment = load_manifest(DEPLOYMENTS[variant])
    grace = env(deployment).get("GENSERVE_SHUTDOWN_GRACE_S")
    shutdown_grace_s = float(grace) if grace is not None else Settings().shutdown_grace_s
    command = only_container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    termination_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert termination_s > pre_stop_s + shutdown_grace_s


@pytest.mark.parametrize("variant", sorted(DEPLOYMENTS))
def test_runs_the_image_command_as_non_root_with_resources(variant: str) -> None:
    deployment = load_manifest(DEPLOYMENTS[variant])
    spec = only_container(deployment)
    assert "command" not in spec and "args" not in spec  # the image's `python -m app`: one worker per pod
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][kind])


def test_gpu_variant_replaces_the_cpu_deployment_with_a_gpu() -> None:
    cpu, gpu = load_manifest(DEPLOYMENTS["cpu"]), load_manifest(DEPLOYMENTS["gpu"])
    assert gpu["metadata"]["name"] == cpu["metadata"]["name"]
    assert gpu["spec"]["selector"] == cpu["spec"]["selector"]
    assert gpu["spec"]["template"]["metadata"]["labels"] == cpu["spec"]["template"]["metadata"]["labels"]
    assert only_container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in only_container(cpu)["resources"]["limits"]
    assert only_container(gpu)["image"] != only_container(cpu)["image"]


def test_selectors_match_the_pods() -> None:
    service = load_manifest(K8S / "service.yaml")
    pdb = load_manifest(K8S / "pdb.yaml")
    monitor = load_manifest(K8S / "prometheus-operator" / "servicemonitor.yaml")
    for path in DEPLOYMENTS.values():
        deployment = load_manifest(path)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= service_ports
    assert {endpoint["path"] for endpoint in monitor["spec"]["endpoints"]} <= app_routes()


@pytest.mark.parametrize(
    "path", [K8S / "hpa.yaml", K8S / "prometheus-adapter" / "hpa.yaml"], ids=["cpu", "queue-depth"]
)
def test_autoscaler_targets_the_deployment_on_cpu(path: Path) -> None:
    hpa = load_manifest(path)
    deployment = load_manifest(DEPLOYMENTS["cpu"])
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    cpu = [metric["resource"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Resource"]
    assert [metric["name"] for metric in cpu] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert all("replicas" not in load_manifest(path)["spec"] for path in DEPLOYMENTS.values())
