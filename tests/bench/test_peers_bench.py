"""`python -m bench peers`: the table's ratios, genserve's fraction of the in-process limit, and the goals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import peers_bench
from bench.peers_bench import CELLS, GENSERVE, GENSERVE_BFLOAT16, PEERS, Measurement, Results
from bench.serve_bench import measure_in_process_limit, resolve_model


def results(genserve_rate: float, peer_rate: float, limits: list[float]) -> Results:
    """Every cell measured twice: genserve at `genserve_rate` img/s, each peer at `peer_rate`, p99 10 ms."""
    cells = {}
    for n, concurrency in CELLS:
        cells[(GENSERVE, n, concurrency)] = [Measurement(genserve_rate, 10.0, 150.0)] * 2
        for peer in PEERS:
            cells[(peer, n, concurrency)] = [Measurement(peer_rate, 12.0, 150.0)] * 2
    return Results(cells, limits)


def limit_line(table: str) -> str:
    [line] = [line for line in table.splitlines() if line.startswith("In-process limit")]
    return line


def test_every_goal_met_leaves_nothing_missed() -> None:
    table, missed = peers_bench.summarize(results(1600.0, 1000.0, [1700.0, 1800.0, 1750.0]))
    assert missed == []
    assert "| 1.60× (" in table
    line = limit_line(table)
    assert "1,750 img/s" in line  # the median of the rounds
    assert "n=16, c=8: 1,600 (0.91×)" in line and "n=64, c=4: 1,600 (0.91×)" in line


def test_a_server_far_from_the_limit_misses_the_limit_goal() -> None:
    _, missed = peers_bench.summarize(results(1600.0, 1000.0, [2000.0]))
    assert missed == [
        "n=16: 0.80× the in-process limit, goal 0.9×",
        "n=64: 0.80× the in-process limit, goal 0.9×",
    ]


def test_ratios_below_the_goals_are_named() -> None:
    _, missed = peers_bench.summarize(results(1050.0, 1000.0, [1100.0]))
    assert "n=1, c=32: 1.05× the best peer (plain FastAPI), goal 1.5×" in missed
    assert "n=16, c=8: 1.05× the best peer (plain FastAPI), goal 1.1×" in missed


@pytest.mark.parametrize("threads", [1, 2])
def test_the_limit_runs_in_as_many_threads_as_asked(tiny_store: Path, threads: int) -> None:
    _, model_path = resolve_model(tiny_store, None)
    limit = measure_in_process_limit(model_path, (4,), duration_s=0.2, threads=threads)
    assert limit.threads == threads
    assert limit.images_per_s[4] > 0


def test_the_bfloat16_configuration_gets_its_own_columns_and_goals() -> None:
    measured = results(1050.0, 1000.0, [1100.0])
    for n, concurrency in CELLS:
        measured.cells[(GENSERVE_BFLOAT16, n, concurrency)] = [Measurement(1800.0, 11.0, 190.0)]
    table, missed = peers_bench.summarize(measured)
    header, _, first_row = table.splitlines()[:3]
    assert header.endswith("| genserve ÷ best peer | genserve bfloat16 ÷ best peer |")
    assert first_row.startswith("| n=1, c=1 | 1,050, 10.0, 150 | 1,800, 11.0, 190 |")
    assert first_row.endswith("| 1.05× (plain FastAPI) | 1.80× (plain FastAPI) |")
    assert "genserve bfloat16: n=1, c=32: 1.80× the best peer (plain FastAPI), goal 1.5×" not in missed
    assert "n=1, c=32: 1.05× the best peer (plain FastAPI), goal 1.5×" in missed
    assert not [miss for miss in missed if miss.startswith("genserve bfloat16:")]
