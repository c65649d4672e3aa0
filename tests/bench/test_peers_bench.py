"""`python -m bench peers`: the table's ratios, genserve's fraction of the in-process limit, and the goals."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.image.formats import GRID_PADDING, tile_images
from app.image.runtime import ImageRuntime
from bench import peers_bench, serve_bench
from bench.peers_bench import CELLS, GENSERVE, GENSERVE_BFLOAT16, LIMIT_SIZES, PEERS, Measurement, Results
from bench.serve_bench import load_for_limit, measure_in_process_limit, resolve_model
from genserve import store
from genserve.conventions import latents_from_seeds


def results(genserve_rate: float, peer_rate: float, limits: list[float]) -> Results:
    """Every cell measured twice: genserve at `genserve_rate` img/s, each peer at `peer_rate`, p99 10 ms.

    The in-process limit is `limits` (one per round) at every request size, 1,000 with the plain call.
    """
    cells = {}
    for n, concurrency in CELLS:
        cells[(GENSERVE, n, concurrency)] = [Measurement(genserve_rate, 10.0, 150.0)] * 2
        for peer in PEERS:
            cells[(peer, n, concurrency)] = [Measurement(peer_rate, 12.0, 150.0)] * 2
    plain = {size: [1000.0] for size in LIMIT_SIZES}
    return Results(cells, {size: list(limits) for size in LIMIT_SIZES}, plain)


def limit_rows(table: str) -> dict[int, list[str]]:
    """The in-process limit table's rows by request size, each as its cells."""
    lines = table.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("In-process limit"))
    body = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 4 :])
    rows = [line.strip("|").split(" | ") for line in body]
    return {int(cells[0]): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_every_goal_met_leaves_nothing_missed() -> None:
    table, missed = peers_bench.summarize(results(1600.0, 1000.0, [1650.0, 1700.0, 1680.0]))
    assert missed == []
    assert "| 1.60× (" in table
    rows = limit_rows(table)
    assert sorted(rows) == [16, 64]
    # The median of the rounds with the chosen call and with the plain one; genserve's best cell; the best peer's;
    # how far any server could lead that peer.
    assert rows[16] == ["1,680", "1,000", "c=8: 1,600 (0.95×)", "plain FastAPI, c=8: 1,000 (0.60×)", "1.68×"]
    assert rows[64] == ["1,680", "1,000", "c=4: 1,600 (0.95×)", "plain FastAPI, c=4: 1,000 (0.60×)", "1.68×"]


def test_the_limit_table_takes_each_request_sizes_own_limit_and_fastest_cells() -> None:
    measured = results(1000.0, 900.0, [2000.0])
    measured.limits[64] = [2500.0, 2400.0, 2600.0]
    measured.cells[(GENSERVE, 16, 32)] = [Measurement(1900.0, 10.0, 150.0)]
    measured.cells[("LitServe", 64, 4)] = [Measurement(2300.0, 10.0, 150.0), Measurement(2500.0, 10.0, 150.0)]
    table, missed = peers_bench.summarize(measured)
    rows = limit_rows(table)
    assert rows[16] == ["2,000", "1,000", "c=32: 1,900 (0.95×)", "plain FastAPI, c=8: 900 (0.45×)", "2.22×"]
    assert rows[64] == ["2,500", "1,000", "c=4: 1,000 (0.40×)", "LitServe, c=4: 2,400 (0.96×)", "1.04×"]
    assert "n=64: 0.40× the in-process limit, goal 0.95×" in missed
    assert not [miss for miss in missed if miss.startswith("n=16: ")]


def test_a_server_far_from_the_limit_misses_the_limit_goal() -> None:
    _, missed = peers_bench.summarize(results(1600.0, 1000.0, [2000.0]))
    assert missed == [
        "n=16: 0.80× the in-process limit, goal 0.95×",
        "n=64: 0.80× the in-process limit, goal 0.95×",
    ]


def test_the_table_names_the_machine_and_the_calls_genserve_chose() -> None:
    measured = results(1600.0, 1000.0, [1650.0])
    measured.calls = {
        GENSERVE: {
            "state": "chosen",
            "buckets": [
                {"bucket": 1, "call": "plain"},
                {"bucket": 16, "call": "compiled"},
                {"bucket": 64, "call": "compiled"},
            ],
        }
    }

    table, _ = peers_bench.summarize(measured)

    machine = next(line for line in table.splitlines() if line.startswith("Machine: "))
    assert "cores" in machine and "TensorFlow" in machine
    assert (
        f"{GENSERVE}'s model calls: XLA-compiled for batch buckets 16, 64, TensorFlow's own for the others"
        in table
    )


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


def test_the_limit_per_request_size_is_the_best_layout(
    tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model_path = resolve_model(tiny_store, None)
    runtime = load_for_limit(model_path, (2, 4))
    measured: list[tuple[int, int, int]] = []
    real_measure = peers_bench.measure_limit

    def recording(
        runtime: ImageRuntime, sizes: tuple[int, ...], duration_s: float, threads: int, grid: int
    ) -> Any:
        limit = real_measure(runtime, sizes, duration_s, threads, grid)
        measured.append((threads, sizes[0], round(limit.best_images_per_s)))
        return limit

    monkeypatch.setattr(peers_bench, "LIMIT_LAYOUTS", ((1, 2), (2, 4)))
    monkeypatch.setattr(peers_bench, "LIMIT_DURATION_S", 0.2)
    monkeypatch.setattr(peers_bench, "measure_limit", recording)
    best = peers_bench.in_process_limit(runtime, 2)
    assert [(threads, batch) for threads, batch, _ in measured] == [(1, 2), (2, 4)]
    assert min(rate for _, _, rate in measured) > 0
    assert round(best) == max(rate for _, _, rate in measured)


def test_the_limit_encodes_one_png_grid_per_request_sized_slice(tiny_store: Path) -> None:
    _, model_path = resolve_model(tiny_store, None)
    runtime = load_for_limit(model_path, (4,))
    grids = serve_bench._generate_and_encode(runtime, [0, 1, 2, 3], grid_images=2)
    latents = latents_from_seeds([0, 1, 2, 3], runtime.metadata.latent_dim)
    images = runtime.generate({store.LATENT_INPUT: latents})
    assert len(grids) == 2
    for grid, pair in zip(grids, (images[:2], images[2:]), strict=True):
        decoded = np.asarray(Image.open(io.BytesIO(grid)))
        expected = tile_images(pair, None, padding=GRID_PADDING)
        assert np.array_equal(decoded, expected.reshape(decoded.shape))
