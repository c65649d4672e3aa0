"""``python -m bench peers``: genserve against the servers a user would otherwise run, in one run.

The same SavedModel and the same work (``POST /generate?n=N&seed=S&format=png``, one PNG grid per request) are
served by genserve with its defaults, by genserve with ``GENSERVE_TF_CPU_BFLOAT16`` (on CPUs with bfloat16
instructions), by a plain FastAPI app (a sync endpoint, one model call per request) and by LitServe with its
batching (`bench/peers/`). All three start once; each cell (n, concurrency) is then measured for every server in
turn, round after round, so that a noisy moment hits them alike; the table gives medians over the rounds,
images/s, p99, the server's CPU (its whole process tree) and genserve's ratio to the best peer. Each round
also measures the in-process limit for 16 and 64 images per request while the servers sit idle: the best of a
few layouts (2 or 4 threads drawing batches of 64 or 128 through the model and encoding PNG grids of n images,
no HTTP: both cores busy, as a server can keep them). A second table sets genserve's and the best peer's
images/s against it, and says by how much any server could lead that peer without a cheaper model call. With
--check the exit code is 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from app.image.runtime import ImageRuntime
from app.serving.compiled_calls import machine_description
from app.serving.runtime import cpu_supports_bfloat16, usable_cores
from bench.loadgen import LoadResult, LoadSpec, choose_client, median_of_present, shown
from bench.processes import free_port, paused, service_env, start, stop_tree, tree_cpu_s, wait_until_ready
from bench.serve_bench import load_for_limit, measure_limit, resolve_model, use_genserve_threads

ROOT = Path(__file__).resolve().parent.parent
HAS_GOALS = True
GENSERVE = "genserve"
GENSERVE_BFLOAT16 = "genserve bfloat16"
PEERS = {"plain FastAPI": "bench.peers.plain_fastapi", "LitServe": "bench.peers.litserve_app"}
CELLS = ((1, 1), (1, 4), (1, 32), (16, 8), (16, 32), (64, 4))
GOAL_RATIO = 1.1
GOAL_RATIO_N1_C32 = 1.5
GOAL_LIMIT_FRACTION = 0.95
# (threads, images per model call) tried for the in-process limit; the best of them is the limit.
LIMIT_LAYOUTS = ((2, 64), (4, 64), (2, 128))
LIMIT_SIZES = (16, 64)  # images per request whose best cell is compared with the in-process limit
LIMIT_DURATION_S = 3.0
_STARTUP_S = 180.0
# CPU flags that decide how fast a model call can be, as the table's machine line names them.
_SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

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
def running(
    store: Path,
    model: str,
    folder: Path,
    extra_variants: dict[str, dict[str, str]] | None = None,
    calls: dict[str, Any] | None = None,
) -> Iterator[list[Server]]:
    """genserve and every peer, each on its own port, all ready; stopped on exit. The genserve configurations
    start one after another, each once the previous has chosen its model calls; `calls` receives their choices."""
    calls = {} if calls is None else calls
    processes = []
    servers = []
    try:
        for name, extra in (genserve_variants() | (extra_variants or {})).items():
            port = free_port()
            # The variant's settings, under the ones every variant shares.
            genserve_env = extra | service_env(
                store, port, clean=True, default_model=model, log_level="warning", max_queue_images=8192
            )
            log = folder / f"{name.replace(' ', '-')}.log"
            processes.append(start([sys.executable, "-m", "app"], log, genserve_env, ROOT))
            servers.append(Server(name, f"http://127.0.0.1:{port}", processes[-1].pid))
            # One at a time: each measures its model calls with the machine to itself.
            wait_until_ready(f"{servers[-1].base_url}/readyz", processes[-1], log, _STARTUP_S)
            calls[name] = chosen_calls(servers[-1], model)
        env = {key: value for key, value in os.environ.items() if not key.startswith("GENSERVE_")}
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


def _variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:SETTING=VALUE,...`` as (``genserve NAME``, its environment)."""
    name, _, settings = text.partition(":")
    pairs = [pair.partition("=") for pair in settings.split(",") if pair]
    if not name or not pairs or any(not key.startswith("GENSERVE_") or not sep for key, sep, _ in pairs):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME:GENSERVE_SETTING=VALUE[,GENSERVE_SETTING=VALUE]"
        )
    return f"{GENSERVE} {name}", {key: value for key, _, value in pairs}


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
    """Every measurement of a run: per (server, n, concurrency), the in-process limit per n and round with the call
    genserve chose (`limits`) and with TensorFlow's own (`plain_limits`), and the calls genserve chose."""

    cells: dict[tuple[str, int, int], list[Measurement]]
    limits: dict[int, list[float]]
    plain_limits: dict[int, list[float]] = field(default_factory=dict)
    calls: dict[str, Any] = field(default_factory=dict)


def run(
    store: Path,
    model: str,
    rounds: int,
    duration_s: float,
    client: str,
    extra_variants: dict[str, dict[str, str]] | None = None,
) -> Results:
    results: dict[tuple[str, int, int], list[Measurement]] = {}
    limits: dict[int, list[float]] = {size: [] for size in LIMIT_SIZES}
    plain_limits: dict[int, list[float]] = {size: [] for size in LIMIT_SIZES}
    _, model_path = resolve_model(store, model)
    use_genserve_threads()
    batches = tuple(sorted({batch for _, batch in LIMIT_LAYOUTS}))
    plain_runtime = load_for_limit(model_path, batches)
    chosen_runtime = load_for_limit(model_path, batches)
    limit_calls = chosen_runtime.bucketed_calls(max(batches))
    if limit_calls is not None:
        limit_calls.tune(chosen_runtime.probe_inputs)
    with (
        tempfile.TemporaryDirectory() as folder,
        running(store, model, Path(folder), extra_variants) as servers,
    ):
        calls = {
            server.name: chosen_calls(server, model) for server in servers if server.name.startswith(GENSERVE)
        }
        for round_index in range(rounds):
            for size in LIMIT_SIZES:
                with paused(server.pid for server in servers):
                    plain_limits[size].append(in_process_limit(plain_runtime, size))
                    limits[size].append(in_process_limit(chosen_runtime, size))
                logger.info(
                    "round %d in-process limit, n=%d: %.0f img/s with the chosen call, %.0f with the plain one",
                    round_index + 1,
                    size,
                    limits[size][-1],
                    plain_limits[size][-1],
                )
            for n, concurrency in CELLS:
                # Rotate the order each round so that no server always goes first.
                order = servers[round_index % len(servers) :] + servers[: round_index % len(servers)]
                for server in order:
                    # Each server alone: the others are paused, idle as they are, so that none takes CPU from it.
                    with paused(other.pid for other in servers if other is not server):
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
    return Results(results, limits, plain_limits, calls)


def chosen_calls(server: Server, model: str, timeout_s: float = 900.0) -> dict[str, Any]:
    """The model calls genserve chose for `model`, once every version it serves has measured its own: the cells
    are measured after the tunings, which load both cores for a while after start-up, not during them."""
    deadline = time.monotonic() + timeout_s
    calls: dict[str, Any] = {}
    while time.monotonic() < deadline:
        models = httpx.get(f"{server.base_url}/models", timeout=10).json()["models"]
        states = {
            (entry["name"], version["version"]): version.get("model_calls")
            or {"state": "plain", "buckets": []}
            for entry in models
            for version in entry["versions"]
            if version["status"] == "available"
        }
        calls = next((state for (name, _), state in states.items() if name == model), {})
        if all(state["state"] in ("chosen", "plain") for state in states.values()):
            return calls
        time.sleep(0.5)
    logger.warning("%s was still choosing its model calls after %.0f s", server.name, timeout_s)
    return calls


def machine_lines(calls: dict[str, Any]) -> list[str]:
    """The machine the run measured (CPU model and flags that matter) and the calls genserve chose on it."""
    machine = machine_description()
    flags = set(machine["flags"].split())
    shown_flags = [flag for flag in _SPEED_FLAGS if flag in flags]
    lines = [
        f"Machine: {machine['cpu']}, {usable_cores()} cores, {', '.join(shown_flags) or 'no AVX'}; "
        f"TensorFlow {machine['tensorflow']}."
    ]
    for name, chosen in calls.items():
        buckets = chosen.get("buckets", [])
        compiled = [str(bucket["bucket"]) for bucket in buckets if bucket["call"] == "compiled"]
        lines.append(
            f"{name}'s model calls: XLA-compiled for batch buckets {', '.join(compiled) or 'none'}, "
            f"TensorFlow's own for the others ({len(buckets)} buckets measured)."
        )
    return lines


Medians = tuple[float | None, float | None, float | None]  # images/s, p99 ms, CPU %


def summarize(run_results: Results) -> tuple[str, list[str]]:
    results = run_results.cells
    variants = sorted(
        {name for name, _, _ in results if name.startswith(GENSERVE)},
        key=lambda name: (name != GENSERVE, name),
    )
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
    machine = ["", *machine_lines(run_results.calls)]
    return "\n".join(lines + limit_lines + machine), missed + limit_missed


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


def in_process_limit(runtime: ImageRuntime, images_per_request: int) -> float:
    """The best images/s of LIMIT_LAYOUTS, each batch encoded as PNG grids of `images_per_request` images."""
    return max(
        measure_limit(runtime, (batch,), LIMIT_DURATION_S, threads, images_per_request).best_images_per_s
        for threads, batch in LIMIT_LAYOUTS
    )


def _versus_limit(run_results: Results) -> tuple[list[str], list[str]]:
    """genserve's best cell (defaults) and the best peer's at each of LIMIT_SIZES against the in-process limit.

    The last column is the limit over the best peer: the most any server can lead that peer by at that size
    without a cheaper model call.
    """
    rows, missed = [], []
    for size in LIMIT_SIZES:
        limit = median_of_present(run_results.limits.get(size, []))
        plain = median_of_present(run_results.plain_limits.get(size, []))
        own = _best_cell(run_results, [GENSERVE], size)
        peer = _best_cell(run_results, list(PEERS), size)
        if not limit or own is None or peer is None:
            continue
        fraction = own.images_per_s / limit
        rows.append(
            f"| {size} | {limit:,.0f} | {plain or 0:,.0f} | c={own.concurrency}: {own.images_per_s:,.0f} ({fraction:.2f}×) "
            f"| {peer.server}, c={peer.concurrency}: {peer.images_per_s:,.0f} ({peer.images_per_s / limit:.2f}×) "
            f"| {limit / peer.images_per_s:.2f}× |"
        )
        if fraction < GOAL_LIMIT_FRACTION:
            missed.append(f"n={size}: {fraction:.2f}× the in-process limit, goal {GOAL_LIMIT_FRACTION}×")
    if not rows:
        return [], []
    layouts = ", ".join(f"{threads} threads × {batch}" for threads, batch in LIMIT_LAYOUTS)
    caption = (
        f"In-process limit per request size n (the best of {layouts} images per model call, "
        "PNG grids of n images, no HTTP) with the model call genserve chose and with TensorFlow's own, "
        "medians of the rounds:"
    )
    header = (
        "| n | in-process limit, chosen call, img/s | with the plain call | genserve's best (÷ limit) "
        "| best peer's best (÷ limit) | limit ÷ best peer |"
    )
    return ["", caption, "", header, "|---:|---:|---:|---|---|---:|", *rows], missed


class BestCell(NamedTuple):
    server: str
    concurrency: int
    images_per_s: float


def _best_cell(run_results: Results, names: list[str], size: int) -> BestCell | None:
    """The fastest of `names`' cells at `size` images per request, by median images/s."""
    cells = [
        BestCell(name, concurrency, rate)
        for (name, n, concurrency), runs in run_results.cells.items()
        if name in names and n == size and (rate := _medians(runs)[0])
    ]
    return max(cells, key=lambda cell: cell.images_per_s, default=None)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__)
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--model", default="mnist-dcgan")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--client", default="auto", help="auto (wrk if installed), wrk, socket or httpx")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        type=_variant,
        metavar="NAME:SETTING=VALUE[,SETTING=VALUE]",
        help="measure another genserve configuration beside the defaults, e.g. "
        "'threads2:GENSERVE_TF_INTRA_OP_THREADS=2' (repeatable)",
    )
    options = parser.parse_args(argv)
    extra = dict(options.also)
    results = run(
        options.store.resolve(), options.model, options.rounds, options.duration, options.client, extra
    )
    table, missed = summarize(results)
    print(table)
    for goal in missed:
        print(f"goal missed: {goal}", file=sys.stderr)
    return 1 if options.check and missed else 0
