"""Running the project's commands (`python -m <module> ...`) as a user would, output captured as text."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable


def run_module(
    *args: str, unset: Iterable[str] = (), timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` in this environment less the variables in `unset`; never raises on a non-zero exit."""
    dropped = set(unset)
    environment = {key: value for key, value in os.environ.items() if key not in dropped}
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout_s,
        check=False,
    )
