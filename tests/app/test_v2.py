"""The Open Inference Protocol v2 over REST, driven by Triton's own HTTP client against a real server process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.app.helpers import decode_npy, max_abs_diff, running_app
from tests.app.protocol_helpers import combined_store, seeded_latents, serving_process
from tests.conftest import TINY_CONDITIONAL_MODEL, TINY_LATENT_DIM, TINY_MODEL

MAX_N = 8
MAX_QUEUE_IMAGES = 6


@pytest.fixture(scope="module")
def base_url(
    tiny_store: Path, tiny_conditional_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("v2")
    model_store = combined_store(root / "model_store", tiny_store, tiny_conditional_store)
    settings = {"max_n": str(MAX_N), "max_queue_images": str(MAX_QUEUE_IMAGES)}
    with serving_process(model_store, root / "server.log", **settings) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(url=base_url.removeprefix("http://"))
    yield triton_client
    triton_client.close()


def generated(base_url: str, model: str, seed: int, n: int) -> np.ndarray:
    """What `/generate?format=npy` answers for seeds seed … seed+n-1 (conditional: image i gets class i mod K)."""
    response = httpx.post(
        f"{base_url}/generate", params={"model": model, "seed": seed, "n": n, "format": "npy"}, timeout=30
    )
    assert response.status_code == 200
    return decode_npy(response.content)


def latent_input(latents: np.ndarray, *, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("z", list(latents.shape), "FP32")
    tensor.set_data_from_numpy(latents, binary_data=binary)
    return tensor


def label_input(labels: list[int]) -> triton.InferInput:
    tensor = triton.InferInput("label", [len(labels)], "INT32")
    tensor.set_data_from_numpy(np.asarray(labels, dtype=np.int32))
    return tensor


def test_server_is_live_and_ready_with_its_extensions(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "genserve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_readiness_by_name_version_and_label(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready(TINY_MODEL)
    assert client.is_model_ready(TINY_CONDITIONAL_MODEL, model_version="1")
    assert client.is_model_ready(TINY_MODEL, model_version="stable")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(TINY_MODEL, model_version="7")


def test_metadata_describes_the_serving_signature(
    client: triton.InferenceServerClient, base_url: str
) -> None:
    image_shape = httpx.get(f"{base_url}/models/{TINY_MODEL}").json()["versions"][0]["image_shape"]

    plain = client.get_model_metadata(TINY_MODEL)
    conditional = client.get_model_metadata(TINY_CONDITIONAL_MODEL, model_version="1")

    assert plain["name"] == TINY_MODEL and plain["versions"] == ["1"]
    assert plain["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, TINY_LATENT_DIM]}]
    assert plain["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, *image_shape]}]
    assert conditional["inputs"][1] == {"name": "label", "datatype": "INT32", "shape": [-1]}


def test_binary_infer_gives_the_pixels_of_generate(
    client: triton.InferenceServerClient, base_url: str
) -> None:
    expected = generated(base_url, TINY_MODEL, seed=40, n=3)

    result = client.infer(TINY_MODEL, [latent_input(seeded_latents([40, 41, 42]))], request_id="walk-1")

    images = result.as_numpy("images")
    assert images is not None and images.dtype == np.uint8 and images.shape == expected.shape
    assert max_abs_diff(images, expected) <= 1
    response = result.get_response()
    assert response["id"] == "walk-1" and response["model_version"] == "1"


def test_json_tensors_give_the_same_pixels(client: triton.InferenceServerClient, base_url: str) -> None:
    expected = generated(base_url, TINY_MODEL, seed=7, n=2)
    outputs = [triton.InferRequestedOutput("images", binary_data=False)]

    result = client.infer(
        TINY_MODEL, [latent_input(seeded_latents([7, 8]), binary=False)], outputs=outputs, model_version="1"
    )

    assert "data" in result.get_response()["outputs"][0]
    images = result.as_numpy("images")
    assert images is not None and max_abs_diff(images, expected) <= 1


def test_conditional_infer_takes_one_class_per_image(
    client: triton.InferenceServerClient, base_url: str
) -> None:
    expected = generated(base_url, TINY_CONDITIONAL_MODEL, seed=3, n=3)  # classes 0, 1, 2

    inputs = [latent_input(seeded_latents([3, 4, 5])), label_input([0, 1, 2])]
    images = client.infer(TINY_CONDITIONAL_MODEL, inputs).as_numpy("images")

    assert images is not None and max_abs_diff(images, expected) <= 1


def test_unknown_model_is_404_in_the_v2_error_shape(
    client: triton.InferenceServerClient, base_url: str
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer("no-such-model", [latent_input(seeded_latents([1]))])
    assert raised.value.status() == "404"
    assert "no-such-model" in str(raised.value.message())

    response = httpx.get(f"{base_url}/v2/models/no-such-model")
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize(
    ("model", "tensors", "named"),
    [
        (TINY_MODEL, lambda: [latent_input(np.zeros((2, TINY_LATENT_DIM + 1), np.float32))], "z"),
        (TINY_MODEL, lambda: [latent_input(np.zeros((MAX_N + 1, TINY_LATENT_DIM), np.float32))], "z"),
        (TINY_CONDITIONAL_MODEL, lambda: [latent_input(np.zeros((2, TINY_LATENT_DIM), np.float32))], "label"),
        (TINY_MODEL, lambda: [latent_input(np.full((1, TINY_LATENT_DIM), np.nan, np.float32))], "z"),
    ],
    ids=["wrong-latent-length", "more-rows-than-max-n", "missing-label", "not-finite"],
)
def test_bad_inputs_are_400_naming_the_input(
    client: triton.InferenceServerClient,
    model: str,
    tensors: Callable[[], list[triton.InferInput]],
    named: str,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, tensors())
    assert raised.value.status() == "400"
    assert str(raised.value.message()).startswith(f"{named}:")


def test_data_that_does_not_fill_the_shape_is_400_in_the_v2_error_shape(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/v2/models/{TINY_MODEL}/infer",
        json={"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [1, 2]}]},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "z: data must hold 4 numbers for shape [1, 4], got 2"}


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"inputs": [{"name": "z", "datatype": ["FP32"], "shape": [1], "data": [0]}]}', {}),
        (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}),
        (b'{"inputs": []}', {}),
        (b"not json", {}),
        (
            b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}]}',
            {"Inference-Header-Content-Length": "9999"},
        ),
        (
            b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}]}',
            {},
        ),
    ],
    ids=[
        "datatype-not-a-string",
        "deep-nesting",
        "no-inputs",
        "not-json",
        "header-longer-than-body",
        "missing-binary-data",
    ],
)
def test_malformed_requests_are_400_in_the_v2_error_shape(
    base_url: str, content: bytes, headers: dict[str, str]
) -> None:
    response = httpx.post(f"{base_url}/v2/models/{TINY_MODEL}/infer", content=content, headers=headers)

    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


def test_full_queue_is_503_with_retry_after(base_url: str) -> None:
    rows = MAX_QUEUE_IMAGES + 1  # within GENSERVE_MAX_N, beyond what the queue may hold
    data = seeded_latents(list(range(rows)))
    body = {
        "inputs": [
            {"name": "z", "datatype": "FP32", "shape": list(data.shape), "data": data.ravel().tolist()}
        ]
    }

    response = httpx.post(f"{base_url}/v2/models/{TINY_MODEL}/infer", json=body)

    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "queued" in response.json()["error"]


def test_requests_are_counted_by_route_template(client: triton.InferenceServerClient, base_url: str) -> None:
    client.infer(TINY_MODEL, [latent_input(seeded_latents([1]))])

    page = httpx.get(f"{base_url}/metrics").text

    assert 'route="/v2/models/{name}/infer",status="200"' in page


def test_deadline_is_504_and_infer_shares_model_calls_with_generate(tiny_store: Path) -> None:
    z = seeded_latents([11, 12])
    body = {"inputs": [{"name": "z", "datatype": "FP32", "shape": [2, TINY_LATENT_DIM], "data": z.tolist()}]}

    async def scenario() -> None:
        async with running_app(tiny_store, request_timeout_s=1e-6) as hurried:
            response = await hurried.post(f"/v2/models/{TINY_MODEL}/infer", json=body)
            assert response.status_code == 504
            assert isinstance(response.json()["error"], str)
        async with running_app(tiny_store, max_delay_ms=300, adaptive_delay=False) as client:
            before = (await client.get("/models")).json()["models"][0]["versions"][0]["batching"]
            v2, npy = await asyncio.gather(
                client.post(f"/v2/models/{TINY_MODEL}/infer", json=body),
                client.post("/generate", params={"seed": 11, "n": 2, "format": "npy"}),
            )
            after = (await client.get("/models")).json()["models"][0]["versions"][0]["batching"]
            assert v2.status_code == 200 and npy.status_code == 200
            assert after["model_calls"] - before["model_calls"] == 1
            images = np.asarray(v2.json()["outputs"][0]["data"], dtype=np.uint8).reshape(
                decode_npy(npy.content).shape
            )
            assert max_abs_diff(images, decode_npy(npy.content)) <= 1

    asyncio.run(scenario())
