import logging
import os
import subprocess
import sys

import pytest

from bench.__main__ import main
from genserve.console import LOG_LEVEL_VARIABLE


def test_a_benchmark_that_loads_tensorflow_keeps_its_start_up_notices_off_the_console() -> None:
    environment = {key: value for key, value in os.environ.items() if key != LOG_LEVEL_VARIABLE}

    completed = subprocess.run(
        [sys.executable, "-m", "bench", "train", "--help"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: python -m bench train")
    assert completed.stderr == ""


def test_the_http_client_logs_no_line_per_request(capsys: pytest.CaptureFixture[str]) -> None:
    # Waiting for a server polls its readiness route many times a second; httpx logs each call at INFO.
    with pytest.raises(SystemExit):
        main(["peers", "--help"])

    assert capsys.readouterr().out.startswith("usage: python -m bench peers")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
