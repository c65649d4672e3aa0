"""The multi-worker training Job: its workers, their names, their TF_CONFIG and their storage agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.deploy.support import K8S, load_manifest, load_yaml_documents, only_container
from training.cli import build_parser
from training.cluster import tf_config_from_env
from training.train_options import train_config_from_args

TRAINING = K8S / "training"


def job() -> dict[str, Any]:
    return load_manifest(TRAINING / "job.yaml")


def service() -> dict[str, Any]:
    return load_manifest(TRAINING / "service.yaml")


def plain_env(manifest: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in only_container(manifest)["env"] if "value" in item}


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_job_runs_one_indexed_worker_per_tf_config_entry() -> None:
    manifest = job()
    spec = manifest["spec"]
    workers = int(plain_env(manifest)["TRAIN_WORKERS"])
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == workers
    assert spec["template"]["spec"]["restartPolicy"] == "OnFailure" and spec["backoffLimit"] >= workers
    [job_name] = [
        item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in only_container(manifest)["env"]
        if item["name"] == "TRAIN_JOB_NAME"
    ]
    assert job_name == "metadata.labels['job-name']"


def test_workers_are_named_by_the_headless_service_on_their_port() -> None:
    manifest, headless = job(), service()
    pod = manifest["spec"]["template"]
    assert pod["spec"]["subdomain"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [port] = only_container(manifest)["ports"]
    [service_port] = headless["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    assert int(plain_env(manifest)["TRAIN_PORT"]) == port["containerPort"] == service_port["port"]


def test_tf_config_built_in_each_pod_lists_every_worker() -> None:
    manifest = job()
    env = {**plain_env(manifest), "TRAIN_JOB_NAME": manifest["metadata"]["name"]}
    workers = int(env["TRAIN_WORKERS"])

    configs = [tf_config_from_env({**env, "JOB_COMPLETION_INDEX": str(index)}) for index in range(workers)]

    service_name = service()["metadata"]["name"]
    expected = [f"genserve-train-{index}.{service_name}:2222" for index in range(workers)]
    assert all(config["cluster"] == {"worker": expected} for config in configs)
    assert [config["task"] for config in configs] == [
        {"type": "worker", "index": index} for index in range(workers)
    ]


def test_workers_train_multi_worker_with_resume_through_the_cluster_entrypoint() -> None:
    container = only_container(job())
    assert container["command"] == ["python", "-m", "training.cluster"]
    args = build_parser().parse_args(container["args"])
    config = train_config_from_args(args)
    assert args.command == "train" and config.distribute == "multi-worker" and config.resume
    assert config.batch_size % int(plain_env(job())["TRAIN_WORKERS"]) == 0


def test_store_and_runs_are_shared_claims_the_serving_side_can_mount() -> None:
    manifest = job()
    container = only_container(manifest)
    mounts = {mount["name"]: Path(mount["mountPath"]) for mount in container["volumeMounts"]}
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in manifest["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    declared = {claim["metadata"]["name"]: claim for claim in load_yaml_documents(TRAINING / "pvc.yaml")}
    assert set(claims.values()) == set(declared)
    assert all(claim["spec"]["accessModes"] == ["ReadWriteMany"] for claim in declared.values())
    config = train_config_from_args(build_parser().parse_args(container["args"]))
    by_path = {mounts[name]: claims[name] for name in claims}
    assert by_path[Path(config.store)] == "genserve-model-store"
    assert config.run_path.parent in by_path  # every worker resumes from the chief's run folder


def test_serving_service_does_not_select_training_pods() -> None:
    serving = load_manifest(K8S / "service.yaml")
    pod_labels = job()["spec"]["template"]["metadata"]["labels"]
    assert not serving["spec"]["selector"].items() <= pod_labels.items()
