"""GET /metrics: values that move with real traffic."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import TINY_MODEL, make_settings, wait_until_ready

MODEL = {"model": TINY_MODEL, "version": "1"}


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_generation_counters_move_with_requests(client: TestClient) -> None:
    before = scrape(client)
    calls_before = client.get("/models").json()["models"][0]["versions"][0]["batching"]["model_calls"]
    for seed in range(3):
        assert client.post("/generate", params={"n": 2, "seed": seed}).status_code == 200
    after = scrape(client)
    calls_after = client.get("/models").json()["models"][0]["versions"][0]["batching"]["model_calls"]

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("genserve_images_generated_total", **MODEL) == 6
    assert moved("genserve_http_requests_total", route="/generate", method="POST", status="200") == 3
    assert moved("genserve_http_request_duration_seconds_count", route="/generate", method="POST") == 3
    assert moved("genserve_batch_size_images_count", **MODEL) == calls_after - calls_before
    assert moved("genserve_batch_size_images_sum", **MODEL) == 6
    assert moved("genserve_batch_size_requests_sum", **MODEL) == 3
    assert moved("genserve_queue_wait_seconds_count", **MODEL) == 3
    assert moved("genserve_model_call_seconds_count", **MODEL) == calls_after - calls_before
    assert moved("genserve_render_seconds_count", **MODEL, format="png") == 3


def test_lifecycle_and_state_metrics(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "genserve_ready") == 1
    assert value(samples, "genserve_model_loads_total", model=TINY_MODEL) == 1
    assert value(samples, "genserve_model_load_duration_seconds_count", model=TINY_MODEL) == 1
    device = client.get("/models").json()["device"]
    assert value(samples, "genserve_model_info", **MODEL, kind="dcgan", device=device) == 1
    assert value(samples, "genserve_queue_depth_images", **MODEL) == 0
    assert value(samples, "genserve_in_flight_images", **MODEL) == 0
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


def test_unknown_paths_share_one_route_label(client: TestClient) -> None:
    before = scrape(client)
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    after = scrape(client)
    labels = {"route": "unmatched", "method": "GET", "status": "404"}
    assert (
        value(after, "genserve_http_requests_total", **labels)
        - value(before, "genserve_http_requests_total", **labels)
        == 2
    )
    assert not any("/no/such" in str(key) for key in after)


def test_padding_rows_are_not_counted_as_generated_images(tiny_store: Path) -> None:
    settings = make_settings(tiny_store, max_batch_size=8, allowed_batch_sizes="4,8")
    with TestClient(create_app(settings)) as padded:
        wait_until_ready(padded)
        before = scrape(padded)
        assert padded.post("/generate", params={"n": 3, "seed": 1}).status_code == 200
        after = scrape(padded)

    def moved(name: str) -> float:
        return value(after, name, **MODEL) - value(before, name, **MODEL)

    assert moved("genserve_images_generated_total") == 3
    assert moved("genserve_padding_images_total") == 1
    assert moved("genserve_batch_size_images_sum") == 3


def test_metrics_page_has_no_created_series(client: TestClient) -> None:
    assert client.post("/generate", params={"n": 1, "seed": 0}).status_code == 200
    names = {name for name, _ in scrape(client)}
    assert "genserve_http_requests_total" in names
    assert [name for name in names if name.endswith("_created")] == []


def test_requests_in_flight_count_the_request_being_served_and_only_it(client: TestClient) -> None:
    # Each scrape is itself in flight; a finished /generate no longer counts.
    assert value(scrape(client), "genserve_requests_in_flight") == 1.0
    assert client.post("/generate", params={**MODEL, "n": 2, "seed": 3}).status_code == 200
    assert value(scrape(client), "genserve_requests_in_flight") == 1.0
