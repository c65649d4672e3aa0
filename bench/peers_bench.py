"""``python -m bench peers``: genserve against the servers a user would otherwise run, in one run.

The same SavedModel and the same work (``POST /generate?n=N&seed=S&format=png``, one PNG grid per request) are
served by genserve with its defaults, by genserve with ``GENSERVE_TF_CPU_BFLOAT16`` (on CPUs with bfloat16
instructions), by a plain FastAPI app (a sync endpoint, one model call per request) and by LitServe with its
batching (`bench/peers/`). All three start once; each cell (n, concurrency) is then measured for every server in
turn, round after round, so that a noisy moment hits them alike; the table gives medians over the rounds,
images/s, p99, the server's CPU (its whole process tree) and genserve's ratio to the best peer. Each round
also measures the in-process limit (two threads generating batches of 64 and encoding PNG grids of 16 at
once, no HTTP: both cores busy, as a server can keep them) while the servers sit idle, and the table ends with
genserve's fraction of it at 16 and 64 images per request. With --check the exit code is 1 when a goal is
missed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.runtime import cpu_supports_bfloat16
from bench.loadgen import LoadResult, LoadSpec, choose_client, median_of_present, shown
from bench.processes import free_port, start, stop_tree, tree_cpu_s, wait_until_ready
from bench.serve_bench import load_for_limit, measure_limit, resolve_model

ROOT = Path(__file__).resolve().parent.parent
HAS_GOALS = True
GENSERVE = "genserve"
GENSERVE_BFLOAT16 = "genserve bfloat16"
PEERS = {"plain FastAPI": "bench.peers.plain_fastapi", "LitServe": "bench.peers.litserve_app"}
CELLS = ((1, 1), (1, 4), (1, 32), (16, 8), (16, 32), (64, 4))
GOAL_RATIO = 1.1
GOAL_RATIO_N1_C32 = 1.5
GOAL_LIMIT_FRACTION = 0.9
LIMIT_BATCH_SIZE = 64
LIMIT_SIZES = (16, 64)  # images per request whose best cell is compared with the in-process limit
LIMIT_DURATION_S = 3.0
_STARTUP_S = 180.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    images_per_s: float
    p99_ms: float | None
    cpu_pct: float | None


@dataclass(frozen=True)
class Server:
    name: str
    base_url: str
    pid: int


@contextlib.contextmanager
def running(store: Path, model: str, folder: Path) -> Iterator[list[Server]]:
    """genserve and every peer, each on its own port, all ready; stopped on exit."""
    processes = []
    servers = []
    try:
        env = {key: value for key, value in os.environ.items() if not key.startswith("GENSERVE_")}
        for name, extra in genserve_variants().items():
            port = free_port()
            genserve_env = (
                env
                | extra
                | {
                    "GENSERVE_MODEL_STORE": str(store),
                    "GENSERVE_DEFAULT_MODEL": model,
                    "GENSERVE_HOST": "127.0.0.1",
                    "GENSERVE_PORT": str(port),
                    "GENSERVE_LOG_LEVEL": "warning",
                    "GENSERVE_MAX_QUEUE_IMAGES": "8192",
                }
            )
            log = folder / f"{name.replace(' ', '-')}.log"
            processes.append(start([sys.executable, "-m", "app"], log, genserve_env, ROOT))
            servers.append(Server(name, f"http://127.0.0.1:{port}", processes[-1].pid))
        for name, module in PEERS.items():
            port = free_port()
            command = [
                sys.executable,
                "-m",
                module,
                "--store",
                str(store),
                "--model",
                model,
                "--port",
                str(port),
            ]
            processes.append(start(command, folder / f"{module}.log", env, ROOT))
            servers.append(Server(name, f"http://127.0.0.1:{port}", processes[-1].pid))
        for server, process in zip(servers, processes, strict=True):
            ready = "/readyz" if server.name.startswith(GENSERVE) else "/health"
            wait_until_ready(f"{server.base_url}{ready}", process, folder / "genserve.log", _STARTUP_S)
        yield servers
    finally:
        for process in processes:
            stop_tree(process)


def genserve_variants() -> dict[str, dict[str, str]]:
    """genserve's configurations to measure, by name: its defaults, and bfloat16 where the CPU has it."""
    variants: dict[str, dict[str, str]] = {GENSERVE: {}}
    if cpu_supports_bfloat16():
        variants[GENSERVE_BFLOAT16] = {"GENSERVE_TF_CPU_BFLOAT16": "true"}
    return variants


def measure(server: Server, n: int, concurrency: int, duration_s: float, client: str) -> Measurement:
    _, load = choose_client(client)
    spec = LoadSpec(server.base_url, n, concurrency, duration_s, warmup_s=1.0)
    before = tree_cpu_s(server.pid)
    result: LoadResult = load(spec)
    after = tree_cpu_s(server.pid)
    cpu = None if before is None or after is None else 100 * (after - before) / result.wall_s
    if result.errors:
        logger.warning("%s n=%d c=%d: %d errors", server.name, n, concurrency, result.errors)
    return Measurement(result.requests_per_s * n, result.p99_ms, cpu)


@dataclass
class Results:
    """Every measurement of a run: per (server, n, concurrency), and the in-process limit per round."""

    cells: dict[tuple[str, int, int], list[Measurement]]
    limits: list[float]


def run(store: Path, model: str, rounds: int, duration_s: float, client: str) -> Results:
    results: dict[tuple[str, int, int], list[Measurement]] = {}
    limits: list[float] = []
    _, model_path = resolve_model(store, model)
    limit_runtime = load_for_limit(model_path, (LIMIT_BATCH_SIZE,))
    with tempfile.TemporaryDirectory() as folder, running(store, model, Path(folder)) as servers:
        for round_index in range(rounds):
            limit = measure_limit(limit_runtime, (LIMIT_BATCH_SIZE,), LIMIT_DURATION_S)
            limits.append(limit.best_images_per_s)
            logger.info("round %d in-process limit: %.0f img/s", round_index + 1, limits[-1])
            for n, concurrency in CELLS:
                # Rotate the order each round so that no server always goes first.
                order = servers[round_index % len(servers) :] + servers[: round_index % len(servers)]
                for server in order:
                    measured = measure(server, n, concurrency, duration_s, client)
                    results.setdefault((server.name, n, concurrency), []).append(measured)
                    logger.info(
                        "round %d %s n=%d c=%d: %.0f img/s, p99 %s ms, cpu %s %%",
                        round_index + 1,
                        server.name,
                        n,
                        concurrency,
                        measured.images_per_s,
                        shown(measured.p99_ms, 1),
                        shown(measured.cpu_pct, 0),
                    )
    return Results(results, limits)


Medians = tuple[float | None, float | None, float | None]  # images/s, p99 ms, CPU %


def summarize(run_results: Results) -> tuple[str, list[str]]:
    results = run_results.cells
    variants = [name for name in (GENSERVE, GENSERVE_BFLOAT16) if any(key[0] == name for key in results)]
    names = [*variants, *PEERS]
    header = (
        "| cell | "
        + " | ".join(f"{name}: img/s, p99 ms, CPU %" for name in names)
        + "".join(f" | {name} ÷ best peer" for name in variants)
        + " |"
    )
    lines = [header, "|" + "---|" * (len(names) + len(variants) + 1)]
    missed = []
    for n, concurrency in CELLS:
        medians = {name: _medians(results.get((name, n, concurrency), [])) for name in names}
        cells = [
            f"{rate or 0:,.0f}, {p99 if p99 is not None else float('nan'):.1f}, {cpu or 0:.0f}"
            for rate, p99, cpu in medians.values()
        ]
        best_peer = max(PEERS, key=lambda name: medians[name][0] or 0.0)
        ratios = []
        for variant in variants:
            ratio = (medians[variant][0] or 0.0) / max(medians[best_peer][0] or 0.0, 1e-9)
            ratios.append(f"{ratio:.2f}× ({best_peer})")
            prefix = "" if variant == GENSERVE else f"{variant}: "
            missed += [
                prefix + miss for miss in _missed(n, concurrency, ratio, medians[variant], best_peer, medians)
            ]
        lines.append(f"| n={n}, c={concurrency} | " + " | ".join(cells + ratios) + " |")
    limit_lines, limit_missed = _versus_limit(run_results)
    return "\n".join(lines + limit_lines), missed + limit_missed


def _medians(runs: list[Measurement]) -> Medians:
    return (
        median_of_present([run.images_per_s for run in runs]),
        median_of_present([run.p99_ms for run in runs]),
        median_of_present([run.cpu_pct for run in runs]),
    )


def _missed(
    n: int, concurrency: int, ratio: float, own: Medians, best_peer: str, medians: dict[str, Medians]
) -> list[str]:
    """The goals one genserve configuration missed in one cell."""
    missed = []
    goal = GOAL_RATIO_N1_C32 if (n, concurrency) == (1, 32) else GOAL_RATIO
    if ratio < goal:
        missed.append(f"n={n}, c={concurrency}: {ratio:.2f}× the best peer ({best_peer}), goal {goal}×")
    own_p99, peer_p99 = own[1], medians[best_peer][1]
    if own_p99 is not None and peer_p99 is not None and own_p99 > peer_p99:
        missed.append(f"n={n}, c={concurrency}: p99 {own_p99:.1f} ms > {best_peer}'s {peer_p99:.1f} ms")
    return missed


def _versus_limit(run_results: Results) -> tuple[list[str], list[str]]:
    """genserve's best cell (with its defaults) at each of LIMIT_SIZES against the median in-process limit."""
    limit = median_of_present(run_results.limits)
    if not limit:
        return [], []
    parts, missed = [], []
    for size in LIMIT_SIZES:
        rates = {
            concurrency: median_of_present([run.images_per_s for run in runs]) or 0.0
            for (name, n, concurrency), runs in run_results.cells.items()
            if name == GENSERVE and n == size
        }
        if not rates:
            continue
        concurrency = max(rates, key=lambda c: rates[c])
        fraction = rates[concurrency] / limit
        parts.append(f"n={size}, c={concurrency}: {rates[concurrency]:,.0f} ({fraction:.2f}×)")
        if fraction < GOAL_LIMIT_FRACTION:
            missed.append(f"n={size}: {fraction:.2f}× the in-process limit, goal {GOAL_LIMIT_FRACTION}×")
    line = (
        f"In-process limit (two threads, batch {LIMIT_BATCH_SIZE}, PNG grids of 16, no HTTP): {limit:,.0f} img/s; "
        f"genserve's best: " + ", ".join(parts) + "."
    )
    return ["", line], missed


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__)
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--model", default="mnist-dcgan")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--client", default="auto", help="auto (wrk if installed), wrk, socket or httpx")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    options = parser.parse_args(argv)
    results = run(options.store.resolve(), options.model, options.rounds, options.duration, options.client)
    table, missed = summarize(results)
    print(table)
    for goal in missed:
        print(f"goal missed: {goal}", file=sys.stderr)
    return 1 if options.check and missed else 0
