"""A quiet console for the training commands and the service: TensorFlow's C++ start-up lines kept off stderr.

TensorFlow's native libraries log while they load, before its log-level setting takes effect (a oneDNN
notice, CUDA driver probing, the absl "InitializeLog" warning, each once per library), so setting
TF_CPP_MIN_LOG_LEVEL hides only the later lines. `quiet_tensorflow` sets it and imports TensorFlow with the
process's stderr captured, then passes on every captured line that is not one of those known notices, so a
real error at import still shows.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# 3 keeps only fatal messages. Among the start-up lines on a CPU-only machine are error-level ones (a failed
# cuInit, factories registered twice) that are expected and harmless there.
_QUIET_LOG_LEVEL = "3"
START_UP_NOISE = re.compile(
    r"absl::InitializeLog\(\)"
    r"|oneDNN custom operations are on"
    r"|cuda drivers on your machine"
    r"|cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|cpu_feature_guard|To enable the following instructions"
    r"|TF-TRT Warning"
)


def quiet_tensorflow(modules: Sequence[str] = ("keras", "tensorflow")) -> None:
    """Import `modules` (TensorFlow and what loads it) with their start-up notices hidden, and raise the C++
    log threshold.

    Does nothing when the user already chose a level in TF_CPP_MIN_LOG_LEVEL; call it before anything
    imports TensorFlow, since the variable is read once, at import.
    """
    if LOG_LEVEL_VARIABLE in os.environ:
        return
    os.environ[LOG_LEVEL_VARIABLE] = _QUIET_LOG_LEVEL
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            for module in modules:
                importlib.import_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _pass_on(captured.read().decode(errors="replace"))


def _pass_on(text: str) -> None:
    """Write the lines of `text` that are not start-up notices to stderr."""
    kept = [line for line in text.splitlines() if line.strip() and not START_UP_NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


@contextlib.contextmanager
def quieted(names: Sequence[str]) -> Iterator[None]:
    """Raise the named loggers to WARNING for the block, then restore their levels."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for item, level in zip(loggers, levels, strict=True):
            item.setLevel(level)
