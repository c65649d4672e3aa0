"""`python -m bench serve`: the report's table, its goals, and --check turning a missed goal into exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.__main__ as bench_cli
from bench import serve_bench
from bench.loadgen import LoadResult
from bench.serve_bench import BATCHED, UNBATCHED, Cell, Goal, InProcessLimit

COLUMNS = [
    "mode",
    "n",
    "concurrency",
    "images/s",
    "requests/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "mean batch",
    "server CPU %",
    "client CPU %",
    "× unbatched",
    "× limit",
]


def table(report: str) -> list[list[str]]:
    """The markdown table's rows as cells, header first, without the separator row."""
    rows = [line for line in report.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def goal_marks(report: str) -> list[str]:
    return [line.split("**")[1] for line in report.splitlines() if line.startswith("- **")]


def cell(mode: str, n: int, concurrency: int, requests_per_s: float, p99_ms: float) -> Cell:
    load = LoadResult(
        ok=int(requests_per_s * 10),
        errors=0,
        measured_s=10.0,
        p50_ms=p99_ms / 2,
        p95_ms=p99_ms,
        p99_ms=p99_ms,
        client_cpu_s=1.0,
        wall_s=10.0,
    )
    return Cell(mode, n, concurrency, load, server_cpu_pct=None, mean_batch=None)


LIMIT = InProcessLimit(device="/CPU:0", images_per_s={16: 1000.0, 64: 1200.0})


@pytest.mark.parametrize(
    ("batched_requests_per_s", "passed"), [(310.0, True), (290.0, False)], ids=["3.1x", "2.9x"]
)
def test_speedup_goal_compares_batched_with_unbatched(batched_requests_per_s: float, passed: bool) -> None:
    cells = [
        cell(BATCHED, 1, serve_bench.GOAL_CONCURRENCY, batched_requests_per_s, 10.0),
        cell(UNBATCHED, 1, serve_bench.GOAL_CONCURRENCY, 100.0, 10.0),
    ]
    speedup, limit, latency = serve_bench.check_goals(cells, LIMIT)
    assert speedup.passed is passed
    assert limit.passed is None and latency.passed is None


def test_exit_code_is_one_only_for_a_missed_goal_under_check(capsys: pytest.CaptureFixture[str]) -> None:
    met, missed, unmeasured = (
        Goal("fast enough", True, "yes"),
        Goal("batched beats unbatched", False, "1.2x"),
        Goal("near the limit", None, "not measured"),
    )
    assert serve_bench.exit_code([met, missed, unmeasured], check=False) == 0
    assert capsys.readouterr().err == ""
    assert serve_bench.exit_code([met, unmeasured], check=True) == 0
    assert serve_bench.exit_code([met, missed, unmeasured], check=True) == 1
    assert capsys.readouterr().err == "goal missed: batched beats unbatched: 1.2x\n"


def test_bare_check_runs_every_benchmark_and_checks_those_with_goals(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, list[str]] = {}

    def entry_point(name: str) -> object:
        def run(argv: list[str]) -> int:
            calls[name] = list(argv)
            return 1 if "--check" in argv else 0

        return run

    monkeypatch.setattr(bench_cli, "_entry_point", entry_point)
    assert bench_cli.main(["--check"]) == 1
    with_goals = {"serve", "peers"}
    assert calls == {name: ["--check"] if name in with_goals else [] for name in bench_cli.available()}


def test_smoke_run_on_the_tiny_store(
    tiny_store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unreachable latency goal, so --check must turn this run into exit code 1 whatever the timings.
    monkeypatch.setattr(serve_bench, "GOAL_LATENCY_SLACK_MS", -1e6)
    argv = ["serve", "--store", str(tiny_store), "--duration", "0.5", "--warmup", "0.2"]
    argv += ["--concurrency", "1", "--n", "1", "--limit-duration", "0.1", "--client", "socket", "--check"]
    code = bench_cli.main(argv)
    output = capsys.readouterr()
    rows = table(output.out)
    assert rows[0] == COLUMNS
    assert rows[1][0].startswith("in-process limit") and float(rows[1][COLUMNS.index("images/s")]) > 0
    measured = {(row[0], row[1], row[2]): row for row in rows[2:]}
    assert set(measured) == {(BATCHED, "1", "1"), (UNBATCHED, "1", "1")}
    for row in measured.values():
        assert float(row[COLUMNS.index("images/s")]) > 0
        assert row[COLUMNS.index("errors")] == "0"
    # Only the latency goal has its cells (n=1, concurrency 1 in both modes).
    assert goal_marks(output.out) == ["N/A", "N/A", "FAIL"]
    assert code == 1
    [missed] = [line for line in output.err.splitlines() if line.startswith("goal missed:")]
    assert missed.startswith("goal missed: n=1, concurrency 1: batched p99 within")
