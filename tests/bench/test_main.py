import logging

import pytest

from bench.__main__ import main
from genserve.console import LOG_LEVEL_VARIABLE
from tests.commands import run_module


def test_a_benchmark_that_loads_tensorflow_keeps_its_start_up_notices_off_the_console() -> None:
    completed = run_module("bench", "train", "--help", unset=[LOG_LEVEL_VARIABLE])

    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: python -m bench train")
    assert completed.stderr == ""


def test_the_http_client_logs_no_line_per_request(capsys: pytest.CaptureFixture[str]) -> None:
    # Waiting for a server polls its readiness route many times a second; httpx logs each call at INFO.
    with pytest.raises(SystemExit):
        main(["peers", "--help"])

    assert capsys.readouterr().out.startswith("usage: python -m bench peers")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
