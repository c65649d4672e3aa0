"""How long the service takes to start: to ready, to every model serving, and to every model call chosen.

``python -m bench startup [--store model_store] [--rounds 3] [--timeout 300] [--out table.md]``

Each round starts ``python -m app`` on the store twice, from a cold and from a warm model-call cache
(`GENSERVE_MODEL_CALL_CACHE`: an empty folder, then the folder the cold start filled), cold and warm alternating
so both meet the same machine, and times three moments from the process's start: `/readyz` answers 200 (the
default model loaded and warmed up), `/models` lists every model's newest version as available, and every
image generator's model call is chosen (its buckets measured, or read from the cache; `/models`'s
`model_calls.state` leaves "measuring"). Medians over the rounds; the operating system's file cache is warm in
both (the store's files were read by the round before).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import processes

HAS_GOALS = False
_POLL_S = 0.05
_MOMENTS = ("ready", "all models serving", "model calls chosen")


@dataclass(frozen=True)
class Start:
    """Seconds from the process's start to each of `_MOMENTS`."""

    ready: float
    serving: float
    chosen: float

    def values(self) -> tuple[float, float, float]:
        return self.ready, self.serving, self.chosen


def every_model_serving(models: list[dict[str, Any]]) -> bool:
    """Whether every model listed has a version available (loaded and warmed up)."""
    return bool(models) and all(model["latest_available"] is not None for model in models)


def every_call_chosen(models: list[dict[str, Any]]) -> bool:
    """Whether no serving version is still measuring its model calls."""
    for model in models:
        for version in model["versions"]:
            calls = version.get("model_calls")
            if calls is not None and calls.get("state") == "measuring":
                return False
    return True


def time_start(store: Path, cache: Path, log: Path, timeout_s: float) -> Start:
    """Start the service once over `store` with the model-call cache `cache`, and time its three moments."""
    env = processes.service_env(store, clean=True, model_call_cache=cache)
    base = f"http://{env['GENSERVE_HOST']}:{env['GENSERVE_PORT']}"
    started = time.monotonic()
    process = processes.start([sys.executable, "-m", "app"], log, env)
    moments: dict[str, float] = {}
    try:
        with httpx.Client(timeout=2.0) as client:
            while len(moments) < len(_MOMENTS):
                elapsed = time.monotonic() - started
                if process.poll() is not None or elapsed > timeout_s:
                    raise processes.ServerStartError(
                        f"the service did not start in {timeout_s:.0f} s: see {log}"
                    )
                _observe(client, base, elapsed, moments)
                time.sleep(_POLL_S)
    finally:
        processes.stop(process)
    return Start(*(moments[moment] for moment in _MOMENTS))


def _observe(client: httpx.Client, base: str, elapsed: float, moments: dict[str, float]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        if "ready" not in moments:
            if client.get(f"{base}/readyz").status_code == 200:
                moments["ready"] = elapsed
            return
        models = client.get(f"{base}/models").json()["models"]
        if "all models serving" not in moments and every_model_serving(models):
            moments["all models serving"] = elapsed
        if "all models serving" in moments and every_call_chosen(models):
            moments["model calls chosen"] = elapsed


def table(cold: list[Start], warm: list[Start]) -> str:
    """Medians of each moment, cold and warm, as a Markdown table."""
    rows = [
        "| from the process's start to | cold model-call cache | warm model-call cache |",
        "|---|---:|---:|",
    ]
    for index, moment in enumerate(_MOMENTS):
        cold_s = statistics.median(start.values()[index] for start in cold)
        warm_s = statistics.median(start.values()[index] for start in warm)
        rows.append(f"| {moment} | {cold_s:.1f} s | {warm_s:.1f} s |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one start may take")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cold: list[Start] = []
    warm: list[Start] = []
    with tempfile.TemporaryDirectory(prefix="genserve-startup-") as folder:
        root = Path(folder)
        for round_number in range(args.rounds):
            cache = root / f"cache-{round_number}"
            cold.append(time_start(args.store, cache, root / f"cold-{round_number}.log", args.timeout))
            warm.append(time_start(args.store, cache, root / f"warm-{round_number}.log", args.timeout))
            print(f"round {round_number + 1}: cold {cold[-1]}, warm {warm[-1]}", file=sys.stderr)
    result = table(cold, warm)
    cpu = _cpu_model()
    print(f"{args.store}, {args.rounds} rounds, medians; {cpu}\n\n{result}")
    if args.out is not None:
        args.out.write_text(result + "\n")
    return 0


def _cpu_model() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"
