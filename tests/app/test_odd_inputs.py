"""Odd inputs on every surface answered as clean 4xx errors in each protocol's own shape, never a 500."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from app.protocols.inference import Inference
from app.protocols.v2 import codec
from tests.app.protocol_helpers import Served, combined_store, predict_request, rpc_error, serving
from tests.conftest import TINY_MODEL
from tests.training.text.tiny import TINY_TEXT_MODEL

# An empty tensor whose declared shape no array can have.
HUGE_EMPTY = [4611686018427387904, 0]


@pytest.fixture(scope="module")
def served(
    tiny_store: Path, tiny_text_version: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("odd-inputs")
    with serving(combined_store(root / "store", tiny_store, tiny_text_version.parent.parent)) as running:
        yield running


def v2_error(response: httpx.Response) -> str:
    """The message of a v2 error answer, which is `{"error": "message"}` and nothing else."""
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    message: str = body["error"]
    return message


@pytest.mark.parametrize(
    ("model", "tensor"),
    [
        (TINY_MODEL, {"name": "z", "datatype": "FP32", "shape": HUGE_EMPTY, "data": []}),
        (TINY_TEXT_MODEL, {"name": "prompt", "datatype": "BYTES", "shape": HUGE_EMPTY, "data": []}),
    ],
)
def test_v2_json_tensors_with_impossible_shapes_are_a_400(
    served: Served, model: str, tensor: dict[str, Any]
) -> None:
    response = served.http.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})

    assert response.status_code == 400
    assert v2_error(response).startswith(f"{tensor['name']}: shape {HUGE_EMPTY} is larger than")


def test_v2_binary_tensors_with_impossible_shapes_are_a_400(served: Served) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "z", "datatype": "FP32", "shape": HUGE_EMPTY, "parameters": {"binary_data_size": 0}}
            ]
        }
    ).encode()
    response = served.http.post(
        f"/v2/models/{TINY_MODEL}/infer",
        content=header,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )

    assert response.status_code == 400
    assert "is larger than any request can hold" in v2_error(response)


@pytest.mark.parametrize(
    ("dtype", "model"), [(types_pb2.DT_FLOAT, TINY_MODEL), (types_pb2.DT_STRING, TINY_TEXT_MODEL)]
)
def test_grpc_tensors_with_impossible_shapes_are_invalid_argument(
    served: Served, dtype: int, model: str
) -> None:
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    for size in HUGE_EMPTY:
        tensor.tensor_shape.dim.add(size=size)
    name = "prompt" if model == TINY_TEXT_MODEL else "z"

    error = rpc_error(lambda: served.prediction.Predict(predict_request(model, **{name: tensor}), timeout=30))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is larger than any request can hold" in (error.details() or "")


def _grpc_calls(served: Served, code: str) -> float:
    """The gRPC Predict calls /metrics has counted with status `code`."""
    pattern = rf'^genserve_grpc_requests_total\{{[^}}]*code="{code}"[^}}]*method="Predict"[^}}]*\}} (\S+)$'
    found = re.search(pattern, served.http.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_malformed_protobuf_is_invalid_argument_counted_and_logged_once(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    before = _grpc_calls(served, "INVALID_ARGUMENT")
    channel = grpc.insecure_channel(served.grpc_address)
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

    with pytest.raises(grpc.RpcError) as raised, caplog.at_level("WARNING"):
        raw(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=30)
    channel.close()

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "request: is not a valid tensorflow.serving.PredictRequest message"
    assert _grpc_calls(served, "INVALID_ARGUMENT") == before + 1
    malformed = [record for record in caplog.records if "not a valid" in record.getMessage()]
    assert len(malformed) == 1 and malformed[0].levelname == "WARNING" and malformed[0].exc_info is None


def test_an_empty_latent_vector_is_a_422_naming_latents(served: Served) -> None:
    response = served.http.post("/generate", json={"latents": [[]]})

    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("latents: every vector needs at least one value")


@pytest.mark.parametrize("seeds", ["1,,2", "1,2,", ",1,2"])
def test_an_empty_keyframe_seed_is_a_422_naming_seeds(served: Served, seeds: str) -> None:
    response = served.http.get("/interpolate", params={"seeds": seeds, "steps": 2})

    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("seeds: ")


def test_a_v2_id_that_is_not_a_string_is_a_400(served: Served) -> None:
    tensor = {"name": "z", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}
    response = served.http.post(f"/v2/models/{TINY_MODEL}/infer", json={"id": {"a": 1}, "inputs": [tensor]})

    assert response.status_code == 400
    assert v2_error(response) == "id: must be a string"


def test_strings_among_v2_numbers_are_named_as_such(served: Served) -> None:
    tensor = {"name": "z", "datatype": "FP32", "shape": [1, 2], "data": ["a", "b"]}
    response = served.http.post(f"/v2/models/{TINY_MODEL}/infer", json={"inputs": [tensor]})

    assert response.status_code == 400
    assert v2_error(response) == "z: data must hold numbers only for datatype FP32"


def test_an_unexpected_error_on_a_protocol_route_is_a_plain_500_without_details(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: object, **__: object) -> dict[str, np.ndarray]:
        raise RuntimeError("secret detail in /srv/models")

    monkeypatch.setattr(Inference, "infer", broken)
    tensor = {"name": "z", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}

    with caplog.at_level("ERROR"):
        response = served.http.post(f"/v2/models/{TINY_MODEL}/infer", json={"inputs": [tensor]})

    assert response.status_code == 500
    assert v2_error(response) == "internal server error"
    assert len([record for record in caplog.records if record.exc_info]) == 1


def test_large_protocol_bodies_are_parsed_off_the_event_loop(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed_on: list[str] = []
    parse = codec.parse_infer_request

    def recording(body: bytes, header_length: str | None) -> codec.InferRequest:
        parsed_on.append(threading.current_thread().name)
        return parse(body, header_length)

    monkeypatch.setattr(codec, "parse_infer_request", recording)
    small = {"name": "z", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}
    # Refused for its row count, but only once it has been read: 40,000 numbers are ~200 KB of JSON.
    large = {"name": "z", "datatype": "FP32", "shape": [2500, 16], "data": [0.5] * 40_000}

    for tensor in (small, large):
        served.http.post(f"/v2/models/{TINY_MODEL}/infer", json={"inputs": [tensor]})

    assert parsed_on[0] == "uvicorn"  # the server's event loop runs on the thread named so by `serving`
    assert parsed_on[1] != "uvicorn"
