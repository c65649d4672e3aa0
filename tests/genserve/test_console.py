import os

import pytest

from genserve.console import LOG_LEVEL_VARIABLE, START_UP_NOISE, _pass_on, quiet_tensorflow

# Lines TensorFlow 2.21 prints while loading on a machine without a GPU.
_START_UP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796059294.626492   16547 port.cc:153] oneDNN custom operations are on. You may see ...",
    "I0000 00:00:1796059294.626862   16547 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1796059127.981148   14699 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
]


def test_start_up_notices_are_dropped_and_other_lines_passed_on(capsys: pytest.CaptureFixture[str]) -> None:
    _pass_on("\n".join([*_START_UP_LINES, "ImportError: libfoo.so: cannot open shared object file"]))

    assert capsys.readouterr().err == "ImportError: libfoo.so: cannot open shared object file\n"
    assert all(START_UP_NOISE.search(line) for line in _START_UP_LINES)


def test_a_log_level_the_user_chose_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOG_LEVEL_VARIABLE, "0")

    quiet_tensorflow()

    assert os.environ[LOG_LEVEL_VARIABLE] == "0"
