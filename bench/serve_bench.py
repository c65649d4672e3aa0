"""`python -m bench serve`: images/s and latency of POST /generate, batched against unbatched.

First the in-process limit: seeds -> latents -> model -> one PNG grid per 16 images, with no HTTP, in as
many threads at once as there are cores (two by default), so that the limit keeps every core busy as a
server can.
Then the real server (`python -m app`) is started once per mode and driven closed-loop over loopback
for every (n, concurrency) cell. One markdown table holds every row, followed by PASS/FAIL goals.
With --check the exit code is 1 when a measured goal is missed (each one is named on stderr); without it,
0 whatever the numbers say. A server that never becomes ready makes it 1 either way.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from app.config import Settings
from app.image.formats import grid_png_bytes
from app.image.runtime import ImageRuntime
from app.serving.runtime import configure_devices, usable_cores
from bench.loadgen import LoadClient, LoadResult, LoadSpec, choose_client, shown
from bench.processes import ServerStartError, free_port, running_service, service_env, tree_cpu_s
from genserve import store
from genserve.conventions import latents_from_seeds

BATCHED = "batched"
UNBATCHED = "unbatched"
LIMIT_BATCH_SIZES = (8, 16, 32, 64)
# Threads generating at once for the limit: model calls and PNG encoding overlap on both cores, as they can
# in a server, so a server at the limit wastes nothing (one thread leaves a core idle while it encodes).
LIMIT_THREADS = 2
GRID_IMAGES = 16  # the limit encodes one PNG grid per 16 images, as the server does for a request with n=16
GOAL_CONCURRENCY = 32
GOAL_SPEEDUP = 3.0
GOAL_LIMIT_FRACTION = 0.8
GOAL_LATENCY_SLACK_MS = 5.0
# `python -m bench --check` passes --check on to the benchmarks that have goals.
HAS_GOALS = True
_IDLE_POLL_S = 0.2
_IDLE_TIMEOUT_S = 60.0

# The PNG level the service encodes at by default, for the in-process figures to match what it serves.
_SERVED_PNG_LEVEL: int = Settings.model_fields["png_compress_level"].default


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """Options of one benchmark run; the CLI only fills it."""

    store_path: Path = Path("model_store")
    model: str | None = None
    duration_s: float = 5.0
    warmup_s: float = 1.0
    concurrency: tuple[int, ...] = (1, 8, 32, 64)
    sizes: tuple[int, ...] = (1, 16)
    out: Path | None = None
    client: str = "auto"
    batch_size: int = 64
    max_delay_ms: float | None = None
    limit_duration_s: float = 2.0
    startup_timeout_s: float = 180.0
    check: bool = False


@dataclass(frozen=True)
class InProcessLimit:
    """Images/s of latents + model + PNG grids in `threads` threads at once, per batch size."""

    device: str
    images_per_s: dict[int, float]
    threads: int = 1

    @property
    def best_batch_size(self) -> int:
        return max(self.images_per_s, key=lambda size: self.images_per_s[size])

    @property
    def best_images_per_s(self) -> float:
        return self.images_per_s[self.best_batch_size]


@dataclass(frozen=True)
class Cell:
    """One measured (mode, n, concurrency) combination."""

    mode: str
    n: int
    concurrency: int
    load: LoadResult
    server_cpu_pct: float | None
    mean_batch: float | None

    @property
    def images_per_s(self) -> float:
        return self.load.requests_per_s * self.n


@dataclass(frozen=True)
class Goal:
    """A target and whether this run met it; `passed` is None when its cells were not measured."""

    description: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int


# --- in-process limit ----------------------------------------------------------------------------


def measure_in_process_limit(
    model_path: Path, batch_sizes: tuple[int, ...], duration_s: float, threads: int = LIMIT_THREADS
) -> InProcessLimit:
    """The best the model and encoder manage without HTTP or batching overheads, `threads` at once."""
    return measure_limit(load_for_limit(model_path, batch_sizes), batch_sizes, duration_s, threads)


def use_genserve_threads() -> None:
    """TensorFlow's thread counts in this process as genserve sets them by default (before TensorFlow runs).

    The in-process limit is then what genserve's model calls can reach.
    """
    configure_devices(intra_op_threads=usable_cores())


def load_for_limit(model_path: Path, batch_sizes: tuple[int, ...]) -> ImageRuntime:
    """The model in this process, warmed up at `batch_sizes`, for one or more `measure_limit` calls."""
    runtime = ImageRuntime(model_path, configure_devices())
    runtime.warm_up(list(batch_sizes))
    return runtime


def measure_limit(
    runtime: ImageRuntime,
    batch_sizes: tuple[int, ...],
    duration_s: float,
    threads: int = LIMIT_THREADS,
    grid_images: int = GRID_IMAGES,
) -> InProcessLimit:
    """Images/s of a loaded model with `threads` threads generating and encoding at once, per batch size.

    Each batch is encoded as PNG grids of `grid_images` images, as a server answers requests of that size.
    """
    rates = {size: _images_per_s(runtime, size, duration_s, threads, grid_images) for size in batch_sizes}
    return InProcessLimit(device=runtime.device.name, images_per_s=rates, threads=threads)


def _images_per_s(
    runtime: ImageRuntime, batch_size: int, duration_s: float, threads: int, grid_images: int
) -> float:
    """Images/s of `threads` threads each generating and encoding batches until `duration_s` has passed."""
    started = time.perf_counter()

    def generate_until_done(thread: int) -> int:
        images = 0
        while time.perf_counter() - started < duration_s:
            first = (thread * 1_000_000) + images
            _generate_and_encode(runtime, list(range(first, first + batch_size)), grid_images)
            images += batch_size
        return images

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="limit") as pool:
        counts = list(pool.map(generate_until_done, range(threads)))
    return sum(counts) / (time.perf_counter() - started)


def _generate_and_encode(runtime: ImageRuntime, seeds: list[int], grid_images: int) -> list[bytes]:
    metadata = runtime.metadata
    inputs = {store.LATENT_INPUT: latents_from_seeds(seeds, metadata.latent_dim)}
    if metadata.conditional:
        inputs[store.LABEL_INPUT] = np.zeros(len(seeds), dtype=np.int32)
    images = runtime.generate(inputs)
    return [
        grid_png_bytes(images[start : start + grid_images], None, _SERVED_PNG_LEVEL)
        for start in range(0, len(images), grid_images)
    ]


# --- the server process --------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(config: BenchConfig, model: str, max_batch_size: int) -> Iterator[Server]:
    """`python -m app` on a free loopback port, ready to serve `model`; stopped on exit."""
    env = _server_env(config, model, max_batch_size, free_port())
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with running_service(env, log, config.startup_timeout_s) as (process, base_url):
            yield Server(base_url=base_url, pid=process.pid)


def _server_env(config: BenchConfig, model: str, max_batch_size: int, port: int) -> dict[str, str]:
    largest_n = max(config.sizes)
    env = service_env(
        config.store_path.resolve(),
        port,
        clean=True,
        default_model=model,
        log_level="warning",
        max_batch_size=max_batch_size,
        max_n=max(64, largest_n),
        # Closed-loop clients never queue more than this, so the server must never answer 503.
        max_queue_images=max(1024, 2 * max(config.concurrency) * largest_n),
    )
    if config.max_delay_ms is not None:
        env["GENSERVE_MAX_DELAY_MS"] = str(config.max_delay_ms)
    return env


def _batcher_counts(probe: httpx.Client, model: str) -> tuple[int, int] | None:
    """(batches, images) the serving version's batcher has run so far, from GET /models/{model}."""
    try:
        versions = probe.get(f"/models/{model}").json()["versions"]
        batching = next(v["batching"] for v in reversed(versions) if v.get("batching"))
        return int(batching["batches"]), int(batching["images"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError, StopIteration):
        return None


def _wait_idle(probe: httpx.Client, model: str) -> tuple[int, int] | None:
    """Wait until the batcher stops running images left over from the last cell; its final counts."""
    deadline = time.monotonic() + _IDLE_TIMEOUT_S
    previous = _batcher_counts(probe, model)
    while time.monotonic() < deadline:
        time.sleep(_IDLE_POLL_S)
        current = _batcher_counts(probe, model)
        if current == previous:
            return current
        previous = current
    return previous


# --- measuring -----------------------------------------------------------------------------------


def run_mode(
    config: BenchConfig, client: LoadClient, model: str, mode: str, max_batch_size: int
) -> list[Cell]:
    """Every (n, concurrency) cell against one server process configured for `mode`."""
    cells: list[Cell] = []
    with (
        running_server(config, model, max_batch_size) as server,
        httpx.Client(base_url=server.base_url, timeout=10.0) as probe,
    ):
        for n in config.sizes:
            for concurrency in config.concurrency:
                spec = LoadSpec(
                    server.base_url,
                    n,
                    concurrency,
                    config.duration_s,
                    config.warmup_s,
                    seed_start=len(cells) << 24,
                )
                cells.append(_measure_cell(client, spec, server, probe, model, mode))
    return cells


def _measure_cell(
    client: LoadClient, spec: LoadSpec, server: Server, probe: httpx.Client, model: str, mode: str
) -> Cell:
    counts_before = _wait_idle(probe, model)
    cpu_before = tree_cpu_s(server.pid)
    load = client(spec)
    cpu_after = tree_cpu_s(server.pid)
    counts_after = _wait_idle(probe, model)
    server_cpu_pct = None
    if cpu_before is not None and cpu_after is not None and load.wall_s > 0:
        server_cpu_pct = 100 * (cpu_after - cpu_before) / load.wall_s
    mean_batch = None
    if counts_before and counts_after and counts_after[0] > counts_before[0]:
        mean_batch = (counts_after[1] - counts_before[1]) / (counts_after[0] - counts_before[0])
    cell = Cell(mode, spec.n, spec.concurrency, load, server_cpu_pct, mean_batch)
    logger.info(
        "%s n=%d concurrency=%d: %.1f images/s, p99 %s ms, %d errors",
        mode,
        spec.n,
        spec.concurrency,
        cell.images_per_s,
        shown(load.p99_ms, 1),
        load.errors,
    )
    return cell


# --- goals and report ----------------------------------------------------------------------------


def _find(cells: list[Cell], mode: str, n: int, concurrency: int) -> Cell | None:
    return next((c for c in cells if (c.mode, c.n, c.concurrency) == (mode, n, concurrency)), None)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def check_goals(cells: list[Cell], limit: InProcessLimit) -> list[Goal]:
    return [_speedup_goal(cells), _limit_goal(cells, limit), _latency_goal(cells)]


def _speedup_goal(cells: list[Cell]) -> Goal:
    description = f"n=1, concurrency {GOAL_CONCURRENCY}: batched >= {GOAL_SPEEDUP:g}x unbatched images/s"
    batched = _find(cells, BATCHED, 1, GOAL_CONCURRENCY)
    unbatched = _find(cells, UNBATCHED, 1, GOAL_CONCURRENCY)
    if batched is None or unbatched is None:
        return Goal(description, None, "not measured")
    ratio = _ratio(batched.images_per_s, unbatched.images_per_s)
    passed = batched.images_per_s > 0 if ratio is None else ratio >= GOAL_SPEEDUP
    detail = f"{batched.images_per_s:.1f} vs {unbatched.images_per_s:.1f} images/s ({shown(ratio, 2)}x)"
    return Goal(description, passed, detail)


def _limit_goal(cells: list[Cell], limit: InProcessLimit) -> Goal:
    description = f"n=16, best concurrency: batched >= {GOAL_LIMIT_FRACTION:g}x the in-process limit"
    candidates = [c for c in cells if c.mode == BATCHED and c.n == GRID_IMAGES]
    if not candidates:
        return Goal(description, None, "not measured")
    best = max(candidates, key=lambda c: c.images_per_s)
    ratio = _ratio(best.images_per_s, limit.best_images_per_s)
    detail = (
        f"{best.images_per_s:.1f} images/s at concurrency {best.concurrency} vs {limit.best_images_per_s:.1f} "
        f"in-process (batch {limit.best_batch_size}) ({shown(ratio, 2)}x)"
    )
    return Goal(description, ratio is not None and ratio >= GOAL_LIMIT_FRACTION, detail)


def _latency_goal(cells: list[Cell]) -> Goal:
    description = f"n=1, concurrency 1: batched p99 within {GOAL_LATENCY_SLACK_MS:g} ms of unbatched p99"
    batched = _find(cells, BATCHED, 1, 1)
    unbatched = _find(cells, UNBATCHED, 1, 1)
    if batched is None or unbatched is None:
        return Goal(description, None, "not measured")
    ours, theirs = batched.load.p99_ms, unbatched.load.p99_ms
    if ours is None or theirs is None:
        return Goal(description, False, "no successful requests to time")
    detail = f"p99 {ours:.1f} ms vs {theirs:.1f} ms ({ours - theirs:+.1f} ms)"
    return Goal(description, ours <= theirs + GOAL_LATENCY_SLACK_MS, detail)


_HEADER = (
    "| mode | n | concurrency | images/s | requests/s | p50 ms | p95 ms | p99 ms | errors "
    "| mean batch | server CPU % | client CPU % | × unbatched | × limit |"
)


def render_report(
    config: BenchConfig,
    model: str,
    client_name: str,
    limit: InProcessLimit,
    cells: list[Cell],
    goals: list[Goal],
    load_average: float | None = None,
) -> str:
    """The whole report as markdown: context, one table, per-batch-size limits and the goals."""
    lines = [
        f"## genserve serving benchmark: `{model}` from `{config.store_path}`",
        "",
        f"{os.cpu_count()} CPU core(s), load average {shown(load_average, 2)} before the run; "
        f"model on {limit.device}; client {client_name}; "
        f"{config.duration_s:g} s per cell after {config.warmup_s:g} s warm-up; batched = "
        f"GENSERVE_MAX_BATCH_SIZE {config.batch_size}, unbatched = 1; GENSERVE_MAX_DELAY_MS "
        f"{'server default' if config.max_delay_ms is None else f'{config.max_delay_ms:g}'}.",
        "",
        _HEADER,
        "|" + "---|" * (_HEADER.count("|") - 1),
        f"| in-process limit ({limit.threads} threads, batch {limit.best_batch_size}) | {GRID_IMAGES}/grid | – "
        f"| {limit.best_images_per_s:.1f} | – | – | – | – | – | {limit.best_batch_size} | – | – | – | 1.00 |",
    ]
    for cell in sorted(cells, key=lambda c: (c.n, c.concurrency, c.mode != BATCHED)):
        lines.append(_row(cell, cells, limit))
    sizes = ", ".join(f"batch {size}: {rate:.1f}" for size, rate in sorted(limit.images_per_s.items()))
    lines += [
        "",
        f"In-process images/s ({limit.threads} threads, each: latents + model + one PNG grid per "
        f"{GRID_IMAGES} images): {sizes}.",
        "",
    ]
    for goal in goals:
        mark = {True: "PASS", False: "FAIL", None: "N/A"}[goal.passed]
        lines.append(f"- **{mark}** {goal.description}: {goal.detail}")
    return "\n".join(lines)


def _row(cell: Cell, cells: list[Cell], limit: InProcessLimit) -> str:
    load = cell.load
    versus_unbatched = None
    if cell.mode == BATCHED and (other := _find(cells, UNBATCHED, cell.n, cell.concurrency)) is not None:
        versus_unbatched = _ratio(cell.images_per_s, other.images_per_s)
    versus_limit = _ratio(cell.images_per_s, limit.best_images_per_s) if cell.n == GRID_IMAGES else None
    values = [
        cell.mode,
        str(cell.n),
        str(cell.concurrency),
        f"{cell.images_per_s:.1f}",
        f"{load.requests_per_s:.1f}",
        shown(load.p50_ms, 1),
        shown(load.p95_ms, 1),
        shown(load.p99_ms, 1),
        str(load.errors),
        shown(cell.mean_batch, 1),
        shown(cell.server_cpu_pct, 0),
        f"{load.client_cpu_pct:.0f}",
        shown(versus_unbatched, 2),
        shown(versus_limit, 2),
    ]
    return "| " + " | ".join(values) + " |"


# --- command line --------------------------------------------------------------------------------


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 1,8,32, got {text!r}"
        ) from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,32, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=defaults.store_path, help="model store folder")
    parser.add_argument("--model", help="model name (default: the store's first model)")
    parser.add_argument(
        "--duration", type=float, default=defaults.duration_s, help="measured seconds per cell"
    )
    parser.add_argument("--warmup", type=float, default=defaults.warmup_s, help="unmeasured seconds per cell")
    parser.add_argument("--concurrency", type=_int_list, default=defaults.concurrency, help="e.g. 1,8,32,64")
    parser.add_argument("--n", type=_int_list, default=defaults.sizes, help="images per request, e.g. 1,16")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "socket", "httpx"),
        default=defaults.client,
        help="load generator; auto = wrk when installed (whole seconds only), else asyncio sockets",
    )
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="max batch size when batched"
    )
    parser.add_argument("--max-delay-ms", type=float, help="GENSERVE_MAX_DELAY_MS (default: the server's)")
    parser.add_argument(
        "--limit-duration",
        type=float,
        default=defaults.limit_duration_s,
        help="seconds per in-process batch size",
    )
    parser.add_argument("--startup-timeout", type=float, default=defaults.startup_timeout_s)
    parser.add_argument(
        "--check", action="store_true", help="exit with 1 when a measured goal is missed (default: always 0)"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.limit_duration <= 0 or args.batch_size < 1:
        parser.error("--duration and --limit-duration must be > 0, --warmup >= 0 and --batch-size >= 1")
    return BenchConfig(
        store_path=args.store,
        model=args.model,
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        sizes=args.n,
        out=args.out,
        client=args.client,
        batch_size=args.batch_size,
        max_delay_ms=args.max_delay_ms,
        limit_duration_s=args.limit_duration,
        startup_timeout_s=args.startup_timeout,
        check=args.check,
    )


def resolve_model(store_path: Path, name: str | None) -> tuple[str, Path]:
    """The model to measure and the folder of its latest complete version."""
    models = store.list_models(store_path)
    if not models:
        raise ValueError(f"no complete model versions in {store_path}; train one or pass --store")
    chosen = name or models[0]
    version = store.latest_version(store_path, chosen)
    if version is None:
        raise ValueError(f"model {chosen!r} has no complete version in {store_path}; available: {models}")
    return chosen, store.version_dir(store_path, chosen, version)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on every platform
        return None


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(None if argv is None else list(argv))
    # The readiness and idle probes would otherwise log every request at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        client_name, client = choose_client(config.client)
        model, model_path = resolve_model(config.store_path, config.model)
    except ValueError as error:
        logger.error("serve bench: %s", error)
        return 2
    logger.info(
        "in-process limit of %s (%s), %g s per batch size", model, model_path, config.limit_duration_s
    )
    load_average = _load_average()
    use_genserve_threads()
    limit = measure_in_process_limit(model_path, LIMIT_BATCH_SIZES, config.limit_duration_s)
    cells: list[Cell] = []
    try:
        for mode, max_batch_size in ((BATCHED, config.batch_size), (UNBATCHED, 1)):
            logger.info(
                "%s server (GENSERVE_MAX_BATCH_SIZE=%d), client %s", mode, max_batch_size, client_name
            )
            cells += run_mode(config, client, model, mode, max_batch_size)
    except ServerStartError as error:
        logger.error("serve bench: %s", error)
        return 1
    goals = check_goals(cells, limit)
    report = render_report(config, model, client_name, limit, cells, goals, load_average)
    print(report)
    if config.out is not None:
        config.out.write_text(report + "\n")
    return exit_code(goals, config.check)


def exit_code(goals: list[Goal], check: bool) -> int:
    """0, or with `check` 1 when a measured goal was missed, naming each missed goal on stderr."""
    if not check:
        return 0
    # A goal whose cells were not measured (passed is None) is neither met nor missed.
    missed = [goal for goal in goals if goal.passed is False]
    for goal in missed:
        print(f"goal missed: {goal.description}: {goal.detail}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
