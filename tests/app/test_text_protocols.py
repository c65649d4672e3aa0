"""Text generators through the three inference protocols: Triton's client (Open Inference Protocol v2),
TensorFlow Serving's REST API and its gRPC stubs, checked against TensorFlow's own `serving_default` sampler
and against `POST /generate`."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.http as triton
from tensorflow_serving.apis import get_model_metadata_pb2
from tritonclient.utils import InferenceServerException

from app.text.servable import text_servable
from tests.app.helpers import running_app
from tests.app.protocol_helpers import (
    TIMEOUT_S,
    Served,
    combined_store,
    predict_request,
    rpc_error,
    serving,
)
from tests.app.text_calls import StepRecorder
from tests.training.text.tiny import TINY_TEXT_MODEL, train_tiny_text

MAX_N = 4
MAX_NEW_TOKENS = 40  # GENSERVE_MAX_NEW_TOKENS of the test server, below /generate's default of 128
PROMPTS = ["The cat ", "A dog "]
LONG_PROMPT = "The cat sees the moon. A dog likes a red ball. My friend finds the river. " * 3
# What each protocol calls a bad request.
BAD_REQUEST = {"v2": "400", "rest": 400, "grpc": grpc.StatusCode.INVALID_ARGUMENT}
Inputs = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def text_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-protocols")
    return train_tiny_text(root / "model_store", root / "runs")


@pytest.fixture(scope="module")
def model_store(tiny_store: Path, text_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny image model and the tiny text model, side by side."""
    root = tmp_path_factory.mktemp("text-protocols-store")
    return combined_store(root / "store", tiny_store, text_version.parent.parent)


@pytest.fixture(scope="module")
def served(model_store: Path) -> Iterator[Served]:
    with serving(model_store, max_n=MAX_N, max_new_tokens=MAX_NEW_TOKENS) as running:
        yield running


@pytest.fixture(scope="module")
def triton_client(served: Served) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=served.address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def tensorflow_greedy(text_version: Path) -> Callable[[str, int], str]:
    """The text the SavedModel's own `serving_default` signature writes at temperature 0, as TF Serving would."""
    signature = tf.saved_model.load(str(text_version)).signatures["serving_default"]

    def greedy(prompt: str, max_new_tokens: int) -> str:
        outputs = signature(
            prompt=tf.constant(prompt),
            max_new_tokens=tf.constant(max_new_tokens, tf.int32),
            temperature=tf.constant(0.0, tf.float32),
            seed=tf.constant(0, tf.int64),
        )
        return bytes(outputs["text"].numpy()).decode()

    return greedy


class Refused(Exception):
    """A protocol's bad-request answer; the message is what the server said."""


def strings(values: list[str]) -> np.ndarray:
    return np.array([value.encode() for value in values], dtype=object)


def decoded(values: np.ndarray) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values.reshape(-1)]


def via_v2(served: Served, inputs: Inputs, *, binary: bool = True) -> list[str]:
    """`text` through Triton's client, as binary tensors or as JSON."""
    datatypes = {"O": "BYTES", "f": "FP32", "i": "INT64"}
    tensors = []
    for name, array in inputs.items():
        datatype = "INT32" if array.dtype == np.int32 else datatypes[array.dtype.kind]
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    client = triton.InferenceServerClient(url=served.address)
    try:
        outputs = [triton.InferRequestedOutput("text", binary_data=binary)]
        result = client.infer(TINY_TEXT_MODEL, tensors, outputs=outputs)
    except InferenceServerException as error:
        assert error.status() == BAD_REQUEST["v2"]
        raise Refused(error.message()) from None
    finally:
        client.close()
    texts = result.as_numpy("text")
    assert texts is not None
    return decoded(texts)


def via_rest(served: Served, inputs: Inputs, *, row_format: bool = False) -> Any:
    """`:predict` in the columnar or the row format; strings as JSON strings."""
    columns = {name: _json_value(array) for name, array in inputs.items()}
    if row_format:
        rows = len(next(iter(inputs.values())))
        body: dict[str, Any] = {"instances": [{n: v[i] for n, v in columns.items()} for i in range(rows)]}
    else:
        body = {"inputs": columns}
    response = served.http.post(f"/v1/models/{TINY_TEXT_MODEL}:predict", json=body)
    if response.status_code != 200:
        assert response.status_code == BAD_REQUEST["rest"]
        raise Refused(response.json()["error"])
    return response.json()["predictions" if row_format else "outputs"]


def _json_value(array: np.ndarray) -> Any:
    if array.dtype == object:
        return np.vectorize(lambda value: value.decode(), otypes=[object])(array).tolist()
    return array.tolist()


def via_grpc(served: Served, inputs: Inputs, timeout_s: float = TIMEOUT_S) -> np.ndarray:
    """Predict with `make_tensor_proto` of each input."""
    request = predict_request(
        TINY_TEXT_MODEL, **{name: tf.make_tensor_proto(array) for name, array in inputs.items()}
    )
    try:
        response = served.prediction.Predict(request, timeout=timeout_s)
    except grpc.RpcError as error:
        assert error.code() == BAD_REQUEST["grpc"], error.details()
        raise Refused(error.details()) from None
    return tf.make_ndarray(response.outputs["text"])


def greedy_inputs(prompts: list[str], max_new_tokens: int) -> Inputs:
    return {
        "prompt": strings(prompts),
        "max_new_tokens": np.full(len(prompts), max_new_tokens, np.int32),
        "temperature": np.zeros(len(prompts), np.float32),
    }


def generated_text(served: Served, **fields: Any) -> list[str]:
    """The completions of `POST /generate` for a text model."""
    response = served.http.post("/generate", json={"model": TINY_TEXT_MODEL, **fields})
    assert response.status_code == 200, response.text
    return [completion["text"] for completion in response.json()["completions"]]


def test_metadata_describes_the_text_signature(
    served: Served, triton_client: triton.InferenceServerClient
) -> None:
    metadata = triton_client.get_model_metadata(TINY_TEXT_MODEL)
    assert triton_client.is_model_ready(TINY_TEXT_MODEL)
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"] == [
        {"name": "prompt", "datatype": "BYTES", "shape": [-1]},
        {"name": "max_new_tokens", "datatype": "INT32", "shape": [-1]},
        {"name": "temperature", "datatype": "FP32", "shape": [-1]},
        {"name": "seed", "datatype": "INT64", "shape": [-1]},
    ]
    assert metadata["outputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    rest = served.http.get(f"/v1/models/{TINY_TEXT_MODEL}/metadata").json()
    signature = rest["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dtypes = {name: info["dtype"] for name, info in signature["inputs"].items()}
    assert dtypes == {
        "prompt": "DT_STRING",
        "max_new_tokens": "DT_INT32",
        "temperature": "DT_FLOAT",
        "seed": "DT_INT64",
    }
    assert signature["outputs"]["text"]["dtype"] == "DT_STRING"

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = TINY_TEXT_MODEL
    response = served.prediction.GetModelMetadata(request, timeout=TIMEOUT_S)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert signatures.signature_def["serving_default"].outputs["text"].dtype == tf.string.as_datatype_enum


def test_greedy_text_is_what_tensorflow_serving_default_writes_through_every_protocol(
    served: Served, tensorflow_greedy: Callable[[str, int], str]
) -> None:
    expected = [tensorflow_greedy(prompt, 24) for prompt in PROMPTS]
    inputs = greedy_inputs(PROMPTS, 24)
    assert all(expected)

    assert via_v2(served, inputs) == expected
    assert via_v2(served, inputs, binary=False) == expected
    assert via_rest(served, inputs) == expected
    assert via_rest(served, inputs, row_format=True) == expected
    assert decoded(via_grpc(served, inputs)) == expected


def test_a_scalar_prompt_is_answered_with_a_scalar_text(
    served: Served, tensorflow_greedy: Callable[[str, int], str]
) -> None:
    expected = tensorflow_greedy(PROMPTS[0], 16)
    scalars = {
        "prompt": np.array(PROMPTS[0].encode(), dtype=object),
        "max_new_tokens": np.array(16, np.int32),
        "temperature": np.array(0.0, np.float32),
    }

    assert via_rest(served, scalars) == expected
    text = via_grpc(served, scalars)
    assert text.shape == () and text.item().decode() == expected


def test_binary_prompts_in_b64_objects(served: Served, tensorflow_greedy: Callable[[str, int], str]) -> None:
    instances = [
        {
            "prompt": {"b64": base64.b64encode(prompt.encode()).decode()},
            "max_new_tokens": 12,
            "temperature": 0,
        }
        for prompt in PROMPTS
    ]

    response = served.http.post(f"/v1/models/{TINY_TEXT_MODEL}:predict", json={"instances": instances})

    assert response.status_code == 200
    assert response.json() == {"predictions": [tensorflow_greedy(prompt, 12) for prompt in PROMPTS]}


def test_sampled_text_is_the_text_generate_writes_for_the_same_seed(served: Served) -> None:
    expected = generated_text(served, prompt="The ", n=2, seed=11, temperature=0.7, max_new_tokens=30)
    inputs = {
        "prompt": strings(["The ", "The "]),
        "max_new_tokens": np.array([30, 30], np.int32),
        "temperature": np.array([0.7, 0.7], np.float32),
        "seed": np.array([11, 12], np.int64),
    }

    assert via_v2(served, inputs) == expected
    assert via_rest(served, inputs) == expected
    assert decoded(via_grpc(served, inputs)) == expected


def test_absent_inputs_take_the_defaults_of_generate(served: Served) -> None:
    # /generate's default max_new_tokens is capped at GENSERVE_MAX_NEW_TOKENS; its temperature is 1.
    expected = generated_text(served, prompt="A ", seed=5)

    texts = via_rest(served, {"prompt": strings(["A "]), "seed": np.array([5], np.int64)})

    assert texts == expected


BAD_INPUTS: list[tuple[Inputs, str]] = [
    ({"prompt": strings(["caf\u00e9 \u00a7"])}, "prompt"),
    (
        {"prompt": strings(["The "]), "max_new_tokens": np.array([MAX_NEW_TOKENS + 1], np.int32)},
        "max_new_tokens",
    ),
    ({"prompt": strings(PROMPTS), "seed": np.array([1], np.int64)}, "seed"),
    ({"prompt": np.array([1.5], np.float32)}, "prompt"),
    ({"prompt": strings(["The "]), "temperature": np.array([-1.0], np.float32)}, "temperature"),
    ({"prompt": strings(["The "] * (MAX_N + 1))}, "prompt"),
    ({"max_new_tokens": np.array([4], np.int32)}, "prompt"),
]
BAD_IDS = [
    "unknown-character",
    "max-new-tokens-over-the-limit",
    "mismatched-rows",
    "float-prompt",
    "negative-temperature",
    "more-rows-than-max-n",
    "no-prompt",
]


@pytest.mark.parametrize(("inputs", "field"), BAD_INPUTS, ids=BAD_IDS)
@pytest.mark.parametrize("protocol", ["v2", "rest", "grpc"])
def test_bad_inputs_are_the_protocols_bad_request_naming_the_field(
    served: Served, protocol: str, inputs: Inputs, field: str
) -> None:
    calls: dict[str, Callable[[Served, Inputs], object]] = {"v2": via_v2, "rest": via_rest, "grpc": via_grpc}
    call = calls[protocol]

    with pytest.raises(Refused) as refused:
        call(served, inputs)

    assert str(refused.value).startswith(f"{field}:")


def test_protocol_rows_share_decode_steps_with_generate(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = StepRecorder(monkeypatch, delay_s=0.002)
    inputs = {"prompt": strings([LONG_PROMPT, LONG_PROMPT]), "max_new_tokens": np.array([8, 8], np.int32)}

    with ThreadPoolExecutor(2) as pool:
        protocol = pool.submit(via_v2, served, inputs)
        generate = pool.submit(generated_text, served, prompt=LONG_PROMPT, max_new_tokens=8, seed=1)
        assert len(protocol.result()) == 2 and len(generate.result()) == 1

    assert max(steps.batch_sizes) == 3  # both rows and the /generate sequence in one model call


def test_a_passed_grpc_deadline_is_deadline_exceeded_and_drops_the_rows(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    StepRecorder(monkeypatch, delay_s=0.3)
    inputs = {"prompt": strings([LONG_PROMPT, LONG_PROMPT])}
    request = predict_request(TINY_TEXT_MODEL, prompt=tf.make_tensor_proto(inputs["prompt"]))

    error = rpc_error(lambda: served.prediction.Predict(request, timeout=0.5))

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    batcher = text_servable(served.registry.resolve(TINY_TEXT_MODEL, None)).batcher
    assert batcher is not None
    deadline = time.monotonic() + 5
    while batcher.active_sequences + batcher.queued_sequences and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.active_sequences + batcher.queued_sequences == 0


def test_text_calls_are_counted_like_image_calls(served: Served) -> None:
    inputs = greedy_inputs(PROMPTS[:1], 4)
    via_v2(served, inputs)
    via_rest(served, inputs)
    via_grpc(served, inputs)

    page = served.http.get("/metrics").text

    assert 'route="/v2/models/{name}/infer",status="200"' in page
    assert 'route="/v1/models/{name}:predict",status="200"' in page
    assert 'genserve_grpc_requests_total{code="OK",method="Predict"}' in page
    assert f'genserve_text_tokens_generated_total{{model="{TINY_TEXT_MODEL}",version="1"}}' in page


def test_a_full_queue_refuses_every_row_and_drops_those_already_queued(model_store: Path) -> None:
    body = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [3], "data": ["The ", "A ", "My "]}]}

    async def scenario() -> None:
        async with running_app(model_store, max_queued_sequences=2, max_active_sequences=1) as client:
            await _wait_for_text_model(client)
            response = await client.post(f"/v2/models/{TINY_TEXT_MODEL}/infer", json=body)
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) >= 1 and "queued" in response.json()["error"]
            app = client._transport.app  # type: ignore[attr-defined]
            batcher = text_servable(app.state.registry.resolve(TINY_TEXT_MODEL, None)).batcher
            assert batcher.queued_sequences == 0

    asyncio.run(scenario())


async def _wait_for_text_model(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while (await client.get(f"/v2/models/{TINY_TEXT_MODEL}/ready")).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("the text model did not load")
        await asyncio.sleep(0.05)


def test_rows_over_the_token_budget_together_are_a_bad_request_naming_prompt(model_store: Path) -> None:
    def body(rows: int) -> dict[str, Any]:
        return {
            "inputs": [
                {"name": "prompt", "datatype": "BYTES", "shape": [rows], "data": ["The "] * rows},
                {"name": "max_new_tokens", "datatype": "INT32", "shape": [rows], "data": [16] * rows},
            ]
        }

    async def scenario() -> None:
        async with running_app(model_store, max_text_request_tokens=50) as client:
            await _wait_for_text_model(client)
            accepted = await client.post(f"/v2/models/{TINY_TEXT_MODEL}/infer", json=body(2))
            assert accepted.status_code == 200
            assert len(accepted.json()["outputs"][0]["data"]) == 2
            refused = await client.post(f"/v2/models/{TINY_TEXT_MODEL}/infer", json=body(3))
            assert refused.status_code == 400
            message = refused.json()["error"]
            assert message.startswith("prompt:") and "add up to 60 tokens" in message and "50" in message

    asyncio.run(scenario())
