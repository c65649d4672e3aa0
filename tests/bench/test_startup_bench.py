"""The start-up benchmark's reading of /models and its table."""

from __future__ import annotations

from bench.startup_bench import Start, every_call_chosen, every_model_serving, table


def _model(available: int | None, *states: str | None) -> dict[str, object]:
    versions = [{"model_calls": None if state is None else {"state": state}} for state in states]
    return {"latest_available": available, "versions": versions}


def test_a_start_is_done_when_every_model_serves_and_no_call_is_still_measured() -> None:
    assert not every_model_serving([])
    assert not every_model_serving([_model(1, "chosen"), _model(None)])
    assert every_model_serving([_model(1, "chosen"), _model(3, None)])
    assert not every_call_chosen([_model(1, "chosen"), _model(2, "measuring")])
    assert every_call_chosen([_model(1, "chosen"), _model(2, "plain"), _model(1, None)])


def test_the_table_shows_each_moments_median_cold_and_warm() -> None:
    cold = [Start(2.0, 5.0, 30.0), Start(3.0, 6.0, 40.0), Start(2.5, 5.5, 35.0)]
    warm = [Start(1.0, 4.0, 4.5), Start(1.5, 4.5, 5.0), Start(1.2, 4.2, 4.6)]

    rows = table(cold, warm).splitlines()

    assert rows[2] == "| ready | 2.5 s | 1.2 s |"
    assert rows[3] == "| all models serving | 5.5 s | 4.2 s |"
    assert rows[4] == "| model calls chosen | 35.0 s | 4.6 s |"
