import json

import pytest

from training import cluster
from training.cluster import tf_config, tf_config_from_env
from training.distribute import worker_position

ENV = {
    "JOB_COMPLETION_INDEX": "1",
    "TRAIN_JOB_NAME": "train",
    "TRAIN_SERVICE": "workers",
    "TRAIN_WORKERS": "3",
}


def test_tf_config_names_every_worker_and_this_task() -> None:
    config = tf_config(2, 3, job="train", service="workers", port=2345)

    assert config == {
        "cluster": {"worker": ["train-0.workers:2345", "train-1.workers:2345", "train-2.workers:2345"]},
        "task": {"type": "worker", "index": 2},
    }
    assert worker_position(config) == (2, 3)


def test_tf_config_from_env_reads_the_completion_index_and_defaults_the_port() -> None:
    config = tf_config_from_env(ENV)

    assert config["task"] == {"type": "worker", "index": 1}
    assert config["cluster"]["worker"][0] == "train-0.workers:2222"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"TRAIN_WORKERS": ""}, "TRAIN_WORKERS"),
        ({"JOB_COMPLETION_INDEX": "3"}, "outside a cluster of 3"),
        ({"TRAIN_PORT": "http"}, "must be integers"),
        ({"TRAIN_PORT": "70000"}, "port"),
    ],
)
def test_tf_config_from_env_says_what_is_wrong(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tf_config_from_env({**ENV, **changes})


def test_a_chief_task_comes_first() -> None:
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}

    assert worker_position(config) == (1, 3)
    assert worker_position({**config, "task": {"type": "chief", "index": 0}}) == (0, 3)
    with pytest.raises(ValueError, match="chief or worker"):
        worker_position({**config, "task": {"type": "ps", "index": 0}})


def test_main_sets_tf_config_before_running_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)

    def run_command(argv: list[str]) -> int:
        seen.append(cluster.os.environ["TF_CONFIG"])
        return 0

    monkeypatch.setattr("training.cli.main", run_command)

    assert cluster.main(["train"]) == 0
    assert json.loads(seen[0]) == tf_config_from_env(ENV)


def test_main_without_the_job_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)

    assert cluster.main(["train"]) == 2
    assert "JOB_COMPLETION_INDEX" in capsys.readouterr().err
