"""Training under tf.distribute: two logical CPU devices in one process, and two worker processes, for the
image models and the char-rnn.

Logical devices must be configured before TensorFlow starts and MultiWorkerMirroredStrategy before it runs
anything, so every distributed run is a fresh process (`tests.training.distributed_worker` or the CLI).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import tensorflow as tf

from bench.processes import free_ports
from genserve.store import list_versions, read_metadata, read_text_evaluation
from tests.conftest import TINY_LATENT_DIM
from tests.training.text.tiny import tiny_text_config
from training.config import TrainConfig
from training.distribute import TF_CONFIG_VARIABLE, Placement, publish_once, resolve_mode
from training.options import DISTRIBUTE_MODES
from training.run_folder import CHECKPOINTS_DIR, HISTORY_FILE, PUBLISHED_FILE, RUN_INFO_FILE, WORKERS_DIR
from training.run_info import read_run_info
from training.text import cli as text_cli
from training.text.config import CHECKPOINT_FILE as TEXT_CHECKPOINT_FILE

ROOT = Path(__file__).resolve().parents[2]
LIMIT, BATCH = 64, 16
STEPS = LIMIT // BATCH
# Two replicas add the same float32 numbers in another order than one process does.
TOLERANCE = 1e-4
TIMEOUT_S = 240.0


def _config(root: Path, name: str, **changes: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "dataset": "shapes",
        "name": name,
        "limit": LIMIT,
        "batch_size": BATCH,
        "epochs": 1,
        "latent_dim": TINY_LATENT_DIM,
        "d_width": 1.0,
        "store": str(root / "store"),
        "run_dir": str(root / "runs" / name),
    }
    options.update(changes)
    if options.get("model") == "vae":
        options.pop("d_width")
    return TrainConfig(**options).to_dict()


def _environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != TF_CONFIG_VARIABLE}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **extra}


def _tf_config(ports: list[int], index: int) -> str:
    workers = [f"localhost:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def _start_runner(spec: dict[str, Any], log: Path, **env: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.training.distributed_worker", json.dumps(spec)]
    return subprocess.Popen(
        command, cwd=ROOT, env=_environment(**env), stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _run_in_one_process(root: Path, runs: list[tuple[str, Any]], key: str) -> None:
    """Train `runs` (name, config) one after another in a runner process with two logical CPUs, each reporting
    to root/name; `key` says whether the configs are image ("config") or text ("text_config") runs."""
    spec = {"logical_cpus": 2, "runs": [{key: config, "report": str(root / name)} for name, config in runs]}
    log = root / "runner.log"
    _wait([_start_runner(spec, log)], [log])


def _wait(processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    for process, log in zip(processes, logs, strict=True):
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert code == 0, log.read_text()[-3000:]


def _report(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.with_suffix(".json").read_text())
    return loaded


def _weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path.with_suffix(".npz")) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _largest_difference(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> float:
    assert first.keys() == second.keys()
    return max(float(np.abs(first[name] - second[name]).max()) for name in first)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process split into two CPU devices: a VAE alone and mirrored, and a mirrored bfloat16 DCGAN with
    lazy R1 and weight averaging."""
    root = tmp_path_factory.mktemp("mirrored")
    runs = [
        ("vae-single", _config(root / "single", "shapes-vae", model="vae", distribute="none")),
        ("vae-mirrored", _config(root, "shapes-vae", model="vae", distribute="mirrored")),
        (
            "dcgan-mirrored",
            _config(
                root,
                "shapes-dcgan",
                distribute="mirrored",
                epochs=2,
                mixed_precision=True,
                r1_gamma=0.1,
                r1_interval=2,
            ),
        ),
    ]
    _run_in_one_process(root, runs, "config")
    return root


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mirrored fixture's VAE trained by two worker processes, one replica each."""
    root = tmp_path_factory.mktemp("workers")
    config = _config(root, "shapes-vae", model="vae", distribute="multi-worker")
    ports = free_ports(2)
    logs = [root / f"worker-{index}.log" for index in range(2)]
    specs = [{"runs": [{"config": config, "report": str(root / f"worker-{index}")}]} for index in range(2)]
    workers = [
        _start_runner(spec, log, TF_CONFIG=_tf_config(ports, index))
        for index, (spec, log) in enumerate(zip(specs, logs, strict=True))
    ]
    _wait(workers, logs)
    return root


def test_auto_mirrors_only_over_several_gpus() -> None:
    assert resolve_mode("auto", 0) == resolve_mode("auto", 1) == "none"
    assert resolve_mode("auto", 4) == "mirrored"
    assert resolve_mode("multi-worker", 0) == "multi-worker"


def test_the_global_batch_must_split_evenly_over_replicas() -> None:
    three = Placement(cast(tf.distribute.Strategy, SimpleNamespace(num_replicas_in_sync=3)), "mirrored")

    assert three.describe(96)["per_replica_batch_size"] == 32
    with pytest.raises(ValueError, match="multiple of 3"):
        three.describe(64)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"distribute": "tpu"}, "unknown distribute mode"),
        ({"distribute": "mirrored", "jit_compile": True}, "one device"),
    ],
)
def test_bad_distribute_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(dataset="shapes", name="x", seed=None, **options)


def test_multi_worker_without_tf_config_says_how_to_set_it(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "training", "train", "--dataset", "shapes", "--name", "x"]
    command += ["--distribute", "multi-worker", "--run-dir", str(tmp_path / "run")]

    finished = subprocess.run(
        command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=120
    )

    assert finished.returncode == 2
    assert "TF_CONFIG" in finished.stderr and "--distribute mirrored" in finished.stderr


def test_mirrored_replicas_match_one_process_on_the_same_global_batch(mirrored: Path) -> None:
    single, replicated = _report(mirrored / "vae-single"), _report(mirrored / "vae-mirrored")

    assert single["steps_per_epoch"] == replicated["steps_per_epoch"] == [STEPS]
    assert replicated["optimizer_steps"] == single["optimizer_steps"] == STEPS
    assert replicated["replica_spread"] == 0.0
    assert (
        _largest_difference(_weights(mirrored / "vae-single"), _weights(mirrored / "vae-mirrored"))
        < TOLERANCE
    )


def test_mirrored_gan_keeps_every_copy_identical_in_bfloat16(mirrored: Path) -> None:
    report = _report(mirrored / "dcgan-mirrored")

    assert report["steps_per_epoch"] == [STEPS, STEPS] and report["optimizer_steps"] == 2 * STEPS
    # Generator, discriminator and the weight average, batch-norm statistics included.
    assert report["replica_spread"] == 0.0
    weights = _weights(mirrored / "dcgan-mirrored")
    assert any(name.startswith("ema_generator/") for name in weights)
    assert all(np.isfinite(value).all() for value in weights.values())


def test_run_and_version_record_the_global_and_per_replica_batch(mirrored: Path) -> None:
    expected = {"strategy": "mirrored", "replicas": 2, "workers": 1, "global_batch_size": BATCH}
    expected["per_replica_batch_size"] = BATCH // 2
    report = _report(mirrored / "dcgan-mirrored")

    assert report["distribution"] == expected
    assert read_metadata(Path(report["version_dir"])).training_config["distribution"] == expected
    assert list_versions(mirrored / "store", "shapes-dcgan") == [1]


def test_two_workers_step_together_into_identical_weights(two_workers: Path) -> None:
    chief, other = _report(two_workers / "worker-0"), _report(two_workers / "worker-1")

    assert chief["steps_per_epoch"] == other["steps_per_epoch"] == [STEPS]
    assert chief["optimizer_steps"] == other["optimizer_steps"] == STEPS
    assert _largest_difference(_weights(two_workers / "worker-0"), _weights(two_workers / "worker-1")) == 0.0
    assert (
        chief["distribution"]["workers"] == 2
        and chief["distribution"]["per_replica_batch_size"] == BATCH // 2
    )


def test_two_workers_match_one_process(two_workers: Path, mirrored: Path) -> None:
    difference = _largest_difference(_weights(two_workers / "worker-0"), _weights(mirrored / "vae-single"))

    assert difference < TOLERANCE


def test_only_the_chief_publishes_and_keeps_a_run_folder(two_workers: Path) -> None:
    chief, other = _report(two_workers / "worker-0"), _report(two_workers / "worker-1")

    assert (
        chief["version_dir"] == str(two_workers / "store" / "shapes-vae" / "1")
        and other["version_dir"] is None
    )
    assert list_versions(two_workers / "store", "shapes-vae") == [1]
    run = two_workers / "runs" / "shapes-vae"
    assert (run / CHECKPOINTS_DIR).is_dir() and not (run / WORKERS_DIR).exists()


def _start_cli_worker(ports: list[int], index: int, root: Path, attempt: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "training", "train", "--dataset", "shapes", "--name", "shapes-dcgan"]
    command += ["--limit", str(LIMIT), "--batch-size", str(BATCH), "--latent-dim", str(TINY_LATENT_DIM)]
    command += ["--d-width", "1", "--epochs", str(EPOCHS), "--store", str(root / "store")]
    command += ["--run-dir", str(root / "run"), "--distribute", "multi-worker", "--resume"]
    log = (root / f"worker-{index}-{attempt}.log").open("wb")
    env = _environment(TF_CONFIG=_tf_config(ports, index))
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


EPOCHS = 4


def _epochs_checkpointed(run: Path) -> int:
    history = run / HISTORY_FILE
    return len(json.loads(history.read_text())["epochs"]) if history.is_file() else 0


@pytest.fixture
def stopped_workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_killed_worker_restarts_and_the_run_resumes_from_the_last_epoch(
    tmp_path: Path, stopped_workers: list[subprocess.Popen[bytes]]
) -> None:
    run = tmp_path / "run"
    ports = free_ports(2)
    stopped_workers += [_start_cli_worker(ports, index, tmp_path, attempt=1) for index in range(2)]
    deadline = time.monotonic() + TIMEOUT_S
    while _epochs_checkpointed(run) < 1 or tf.train.latest_checkpoint(str(run / CHECKPOINTS_DIR)) is None:
        assert time.monotonic() < deadline and stopped_workers[0].poll() is None
        time.sleep(0.05)
    stopped_workers[1].send_signal(signal.SIGKILL)
    stopped_workers[1].wait()
    # The chief's collectives fail without its peer; an orchestrator restarts it as well.
    try:
        stopped_workers[0].wait(timeout=30)
    except subprocess.TimeoutExpired:
        stopped_workers[0].kill()
        stopped_workers[0].wait()
    before = json.loads((run / HISTORY_FILE).read_text())["epochs"]
    assert 1 <= len(before) < EPOCHS, "the run finished before a worker could be killed"

    ports = free_ports(2)
    restarted = [_start_cli_worker(ports, index, tmp_path, attempt=2) for index in range(2)]
    stopped_workers += restarted
    for process in restarted:
        assert process.wait(timeout=TIMEOUT_S) == 0

    after = json.loads((run / HISTORY_FILE).read_text())["epochs"]
    assert [entry["epoch"] for entry in after] == list(range(1, EPOCHS + 1))
    assert after[: len(before)] == before  # the epochs before the kill were kept, not trained again
    logs = [(tmp_path / f"worker-{index}-2.log").read_text() for index in range(2)]
    assert all(f"epoch {len(before)}, step {len(before) * STEPS}" in log for log in logs)
    reader = tf.train.load_checkpoint(str(run / CHECKPOINTS_DIR))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == EPOCHS * STEPS
    assert list_versions(tmp_path / "store", "shapes-dcgan") == [1]
    assert read_run_info(run).distribution == {
        "strategy": "multi-worker",
        "replicas": 2,
        "workers": 2,
        "global_batch_size": BATCH,
        "per_replica_batch_size": BATCH // 2,
    }


# The char-rnn: 4,100 characters of the grammar make 240 training windows of 16, 15 whole global batches.
TEXT_STEPS = 15
TEXT_MODEL = "grammar-rnn"


def _text_config(root: Path, name: str, **changes: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "units": 32,
        "embedding_dim": 8,
        "sequence_length": 16,
        "batch_size": BATCH,
        "epochs": 1,
        "limit_chars": 4_100,
        "sample_length": 5,
        "clip_norm": 0.1,  # small enough to clip, so the clip must measure the global batch's gradient
        **changes,
    }
    return tiny_text_config(root / "store", root / "runs" / name, **options).to_json()


def _start_text_workers(root: Path, config: dict[str, Any], reports: str) -> None:
    ports = free_ports(2)
    logs = [root / f"{reports}-{index}.log" for index in range(2)]
    workers = [
        _start_runner(
            {"runs": [{"text_config": config, "report": str(root / f"{reports}-{index}")}]},
            log,
            TF_CONFIG=_tf_config(ports, index),
        )
        for index, log in enumerate(logs)
    ]
    _wait(workers, logs)


@pytest.fixture(scope="module")
def text_mirrored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The char-rnn trained by one process, and by two logical CPU devices on the same global batch."""
    root = tmp_path_factory.mktemp("text-mirrored")
    runs = [
        ("single", _text_config(root / "single", TEXT_MODEL, distribute="none")),
        ("mirrored", _text_config(root, TEXT_MODEL, distribute="mirrored")),
    ]
    _run_in_one_process(root, runs, "text_config")
    return root


@pytest.fixture(scope="module")
def text_workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The char-rnn trained by two worker processes for one epoch, then both started again for a second."""
    root = tmp_path_factory.mktemp("text-workers")
    config = _text_config(root, TEXT_MODEL, distribute="multi-worker")
    _start_text_workers(root, config, "worker")
    _start_text_workers(root, {**config, "epochs": 2, "resume": True}, "resumed")
    return root


def test_text_cli_offers_the_image_models_distribute_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = argparse.ArgumentParser()
    text_cli.add_train_arguments(train)
    distribute = next(action for action in train._actions if action.dest == "distribute")
    assert tuple(distribute.choices or ()) == DISTRIBUTE_MODES
    assert distribute.default == TrainConfig(dataset="shapes", name="x").distribute
    args = text_cli.build_parser().parse_args(
        ["train", "--dataset", "grammar", "--name", TEXT_MODEL, "--distribute", "mirrored"]
    )
    assert text_cli.config_from_args(args).distribute == "mirrored"

    monkeypatch.delenv(TF_CONFIG_VARIABLE, raising=False)
    options = ["--dataset", "grammar", "--name", TEXT_MODEL, "--run-dir", str(tmp_path / "run")]
    assert text_cli.train_main([*options, "--distribute", "multi-worker"]) == 2


def test_a_restarted_chief_publishes_a_finished_run_once(tmp_path: Path) -> None:
    strategy = cast(tf.distribute.Strategy, SimpleNamespace(num_replicas_in_sync=2))
    chief = Placement(strategy, "multi-worker", worker_index=0, workers=2)
    published: list[Path] = []

    def publish() -> Path:
        published.append(tmp_path / "store" / TEXT_MODEL / str(len(published) + 1))
        return published[-1]

    first = publish_once(chief, tmp_path, 2, publish)
    assert publish_once(chief, tmp_path, 2, publish) == first and published == [first]
    assert publish_once(chief, tmp_path, 3, publish) != first  # more epochs: a new version
    assert json.loads((tmp_path / PUBLISHED_FILE).read_text())["epochs"] == 3


def test_text_mirrored_replicas_match_one_process_on_the_same_global_batch(text_mirrored: Path) -> None:
    single, replicated = _report(text_mirrored / "single"), _report(text_mirrored / "mirrored")

    assert single["steps_per_epoch"] == replicated["steps_per_epoch"] == [TEXT_STEPS]
    assert single["optimizer_steps"] == replicated["optimizer_steps"] == TEXT_STEPS
    assert replicated["replica_spread"] == 0.0
    difference = _largest_difference(_weights(text_mirrored / "single"), _weights(text_mirrored / "mirrored"))
    assert difference < TOLERANCE


def test_text_validation_and_held_out_score_match_one_process(text_mirrored: Path) -> None:
    def history(run: Path) -> dict[str, list[float]]:
        loaded: dict[str, list[float]] = json.loads((run / HISTORY_FILE).read_text())
        return loaded

    single = history(text_mirrored / "single" / "runs" / TEXT_MODEL)
    replicated = history(text_mirrored / "runs" / TEXT_MODEL)
    assert single.keys() == replicated.keys() == {"loss", "val_loss"}
    assert replicated["val_loss"] == pytest.approx(single["val_loss"], abs=1e-3)
    assert replicated["loss"] == pytest.approx(single["loss"], abs=1e-3)
    scores = [
        read_text_evaluation(Path(_report(text_mirrored / name)["version_dir"]))
        for name in ("single", "mirrored")
    ]
    assert scores[0] is not None and scores[1] is not None
    assert scores[1].bits_per_char == pytest.approx(scores[0].bits_per_char, abs=1e-3)


def test_text_run_and_version_record_the_global_and_per_replica_batch(text_mirrored: Path) -> None:
    expected = {"strategy": "mirrored", "replicas": 2, "workers": 1, "global_batch_size": BATCH}
    expected["per_replica_batch_size"] = BATCH // 2
    report = _report(text_mirrored / "mirrored")

    assert report["distribution"] == expected
    run_info = json.loads((text_mirrored / "runs" / TEXT_MODEL / RUN_INFO_FILE).read_text())
    assert run_info["distribution"] == expected and run_info["distribute"] == "mirrored"
    assert read_metadata(Path(report["version_dir"])).training_config["distribution"] == expected
    assert list_versions(text_mirrored / "store", TEXT_MODEL) == [1]


def test_text_workers_step_together_into_the_single_process_weights(
    text_workers: Path, text_mirrored: Path
) -> None:
    chief, other = _report(text_workers / "worker-0"), _report(text_workers / "worker-1")

    assert chief["steps_per_epoch"] == other["steps_per_epoch"] == [TEXT_STEPS]
    assert chief["optimizer_steps"] == other["optimizer_steps"] == TEXT_STEPS
    assert (
        _largest_difference(_weights(text_workers / "worker-0"), _weights(text_workers / "worker-1")) == 0.0
    )
    assert (
        _largest_difference(_weights(text_workers / "worker-0"), _weights(text_mirrored / "single"))
        < TOLERANCE
    )
    assert (
        chief["distribution"]["workers"] == 2
        and chief["distribution"]["per_replica_batch_size"] == BATCH // 2
    )


def test_text_workers_resume_from_the_chiefs_checkpoint(text_workers: Path) -> None:
    chief, other = _report(text_workers / "resumed-0"), _report(text_workers / "resumed-1")

    # Only the second epoch was trained, on top of the first epoch's optimizer steps.
    assert chief["steps_per_epoch"] == other["steps_per_epoch"] == [TEXT_STEPS]
    assert chief["optimizer_steps"] == other["optimizer_steps"] == 2 * TEXT_STEPS
    assert (
        _largest_difference(_weights(text_workers / "resumed-0"), _weights(text_workers / "resumed-1")) == 0.0
    )


def test_text_only_the_chief_publishes_scores_and_keeps_a_run_folder(text_workers: Path) -> None:
    reports = [_report(text_workers / name) for name in ("worker-0", "worker-1", "resumed-0", "resumed-1")]
    store = text_workers / "store"

    assert [report["version_dir"] for report in reports] == [
        str(store / TEXT_MODEL / "1"),
        None,
        str(store / TEXT_MODEL / "2"),
        None,
    ]
    assert list_versions(store, TEXT_MODEL) == [1, 2]
    assert all(read_text_evaluation(store / TEXT_MODEL / str(version)) is not None for version in (1, 2))
    run = text_workers / "runs" / TEXT_MODEL
    assert json.loads((run / PUBLISHED_FILE).read_text())["epochs"] == 2
    assert (run / TEXT_CHECKPOINT_FILE).is_file() and not (run / WORKERS_DIR).exists()
