"""Property-based requests to every documented route, from the service's own OpenAPI schema (schemathesis).

Generated requests mostly break some rule, so two hooks steer part of them onto the success paths: queries often
drop `model` and `version` (the default model answers), and upload fields often carry a real small image. The run
is bounded and seeded here (`make test`); `python -m bench fuzz` runs the same tests with many more, unseeded.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis.checks import not_a_server_error

from app.main import create_app
from bench.processes import running_service, service_env
from tests.conftest import make_settings

# Requests that say which model they want can only succeed for a model that exists; half of them say nothing.
# Examples per operation: a bounded, seeded run by default; `python -m bench fuzz` asks for many random ones.
_EXAMPLES = int(os.environ.get("GENSERVE_FUZZ_EXAMPLES", "40"))
_SEEDED = "GENSERVE_FUZZ_EXAMPLES" not in os.environ
_ROUTING_FIELDS = ("model", "version")
_FILE_FIELDS = {"image", "start", "end"}


# The schema does not depend on the store, so it is read from an app that never starts; the requests go to a
# real server process over the session's tiny VAE.
schema = schemathesis.openapi.from_dict(create_app(make_settings(Path("model_store"))).openapi())


@pytest.fixture(scope="module")
def base_url(tiny_vae_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = service_env(tiny_vae_store, max_n=8, max_steps=8, log_level="warning")
    with running_service(env, tmp_path_factory.mktemp("fuzz") / "server.log") as (_, url):
        yield url


def _png(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), shade).save(buffer, format="PNG")
    return buffer.getvalue()


_IMAGES = st.builds(_png, st.integers(2, 40), st.integers(2, 40), st.integers(0, 255))


# Known-good fields per operation: one draw in three uses them, so every route's success path is exercised
# with whatever else the generator chose for the body.
_VALID_QUERIES: dict[str, dict[str, Any]] = {
    "POST /generate": {"n": 2, "seed": 3},
    "GET /interpolate": {"start": 1, "end": 2, "steps": 4},
    "POST /interpolate": {"steps": 3},
    "POST /encode": {},
    "POST /reconstruct": {},
}


def _operation(context: Any) -> str:
    operation = context.operation
    return f"{operation.method.upper()} {operation.path}" if operation is not None else ""


@schemathesis.hook
def flatmap_query(context: Any, query: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    query = query or {}
    without_routing = {key: value for key, value in query.items() if key not in _ROUTING_FIELDS}
    choices = [query, without_routing]
    valid = _VALID_QUERIES.get(_operation(context))
    if valid is not None:
        choices.append(valid)
    return st.sampled_from(choices)


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict):
        return st.just(body)
    if _operation(context) == "POST /generate":
        return st.sampled_from([body, {}])
    with_images = _IMAGES.map(lambda image: _real_files(body, image))
    return st.one_of(st.just(body), with_images)


def _real_files(body: dict[str, Any], image: bytes) -> dict[str, Any]:
    """Only the body's file fields, each carrying a real image (one, or a list of up to two)."""
    files: dict[str, Any] = {}
    fields = _FILE_FIELDS.intersection(body)
    if fields & {"start", "end"}:
        fields |= {"start", "end"}  # a morph needs both ends
    for field in fields:
        value = body.get(field)
        files[field] = [image] * max(1, min(len(value), 2)) if isinstance(value, list) else image
    return files


# Status codes seen per operation, for the check that the success paths were reached.
_STATUSES: dict[str, set[int]] = defaultdict(set)


@schema.parametrize()
@settings(max_examples=_EXAMPLES, derandomize=_SEEDED, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_route_answers_5xx_or_leaves_the_error_shape(case: Any, base_url: str) -> None:
    response = case.call_and_validate(base_url=base_url, checks=[not_a_server_error])
    _STATUSES[f"{case.method} {case.path}"].add(response.status_code)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        assert len(error["message"]) < 2000


def test_every_image_route_was_reached_with_valid_input() -> None:
    succeeded = {operation for operation, statuses in _STATUSES.items() if 200 in statuses}
    wanted = {"POST /generate", "GET /interpolate", "POST /encode", "POST /reconstruct", "POST /interpolate"}
    assert wanted <= succeeded, {operation: sorted(_STATUSES[operation]) for operation in wanted}
