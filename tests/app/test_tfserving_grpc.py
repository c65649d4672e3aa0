"""TensorFlow Serving's gRPC API, driven by tensorflow-serving-api's own stubs over a real gRPC channel.

The app runs under uvicorn on a thread of the test process (so tests can hold its model calls), serving
HTTP and gRPC from one event loop as `python -m app` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from app.config import Settings
from tests.app.helpers import HeldModel, max_abs_diff
from tests.app.protocol_helpers import (
    TIMEOUT_S,
    Served,
    combined_store,
    predict_request,
    rpc_error,
    seeded_latents,
    serving,
)
from tests.conftest import TINY_CONDITIONAL_MODEL, TINY_LATENT_DIM, TINY_MODEL

MAX_N = 8
MAX_QUEUE_IMAGES = 6


@pytest.fixture(scope="module")
def model_store(
    tiny_store: Path, tiny_conditional_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return combined_store(tmp_path_factory.mktemp("grpc") / "store", tiny_store, tiny_conditional_store)


@pytest.fixture(scope="module")
def served(model_store: Path) -> Iterator[Served]:
    with serving(model_store, max_n=MAX_N, max_queue_images=MAX_QUEUE_IMAGES) as running:
        yield running


def test_predict_gives_the_pixels_of_generate(served: Served) -> None:
    expected = served.generated(TINY_MODEL, seed=30, n=3)
    request = predict_request(TINY_MODEL, z=tf.make_tensor_proto(seeded_latents([30, 31, 32])))

    response = served.prediction.Predict(request, timeout=TIMEOUT_S)

    images = tf.make_ndarray(response.outputs["images"])
    assert images.dtype == np.uint8 and max_abs_diff(images, expected) <= 1
    assert response.model_spec.name == TINY_MODEL and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_predict_reads_typed_value_fields_and_labels(served: Served) -> None:
    expected = served.generated(TINY_CONDITIONAL_MODEL, seed=5, n=3)  # classes 0, 1, 2
    latents = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, float_val=seeded_latents([5, 6, 7]).ravel().tolist()
    )
    latents.tensor_shape.dim.add(size=3)
    latents.tensor_shape.dim.add(size=TINY_LATENT_DIM)
    request = predict_request(
        TINY_CONDITIONAL_MODEL, z=latents, label=tf.make_tensor_proto([0, 1, 2], dtype=tf.int32)
    )
    request.model_spec.version_label = "stable"

    response = served.prediction.Predict(request, timeout=TIMEOUT_S)

    assert max_abs_diff(tf.make_ndarray(response.outputs["images"]), expected) <= 1


def test_metadata_is_the_signature_def_map(served: Served) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = TINY_CONDITIONAL_MODEL

    response = served.prediction.GetModelMetadata(request, timeout=TIMEOUT_S)

    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["z"].dtype == types_pb2.DT_FLOAT
    assert [dim.size for dim in signature.inputs["z"].tensor_shape.dim] == [-1, TINY_LATENT_DIM]
    assert signature.inputs["label"].dtype == types_pb2.DT_INT32
    assert signature.outputs["images"].dtype == types_pb2.DT_UINT8
    assert response.model_spec.version.value == 1


def test_model_status_reports_available_versions(served: Served) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TINY_MODEL

    response = served.models.GetModelStatus(request, timeout=TIMEOUT_S)

    [status] = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize(
    ("model", "latents", "code"),
    [
        ("no-such-model", seeded_latents([1]), grpc.StatusCode.NOT_FOUND),
        (TINY_MODEL, np.zeros((1, 3), np.float32), grpc.StatusCode.INVALID_ARGUMENT),
        (TINY_MODEL, np.zeros((MAX_N + 1, TINY_LATENT_DIM), np.float32), grpc.StatusCode.INVALID_ARGUMENT),
        (TINY_CONDITIONAL_MODEL, seeded_latents([1]), grpc.StatusCode.INVALID_ARGUMENT),
        (TINY_MODEL, np.array(["a"]), grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["unknown-model", "wrong-latent-length", "more-rows-than-max-n", "missing-label", "strings"],
)
def test_predict_errors_map_to_grpc_status_codes(
    served: Served, model: str, latents: np.ndarray, code: grpc.StatusCode
) -> None:
    request = predict_request(model, z=tf.make_tensor_proto(latents))

    error = rpc_error(lambda: served.prediction.Predict(request, timeout=TIMEOUT_S))

    assert error.code() == code
    assert error.details()


def test_values_that_do_not_fit_their_dtype_are_invalid(served: Served) -> None:
    latents = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT8, int_val=[300] * TINY_LATENT_DIM)
    latents.tensor_shape.dim.add(size=1)
    latents.tensor_shape.dim.add(size=TINY_LATENT_DIM)

    error = rpc_error(
        lambda: served.prediction.Predict(predict_request(TINY_MODEL, z=latents), timeout=TIMEOUT_S)
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metadata_other_than_the_signature_def_is_invalid(served: Served) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["other"])
    request.model_spec.name = TINY_MODEL

    error = rpc_error(lambda: served.prediction.GetModelMetadata(request, timeout=TIMEOUT_S))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status_of_an_unknown_version_is_not_found(served: Served) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TINY_MODEL
    request.model_spec.version.value = 7

    error = rpc_error(lambda: served.models.GetModelStatus(request, timeout=TIMEOUT_S))

    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_full_queue_is_resource_exhausted_with_retry_after(served: Served) -> None:
    latents = seeded_latents(list(range(MAX_QUEUE_IMAGES + 1)))  # within max_n, beyond the queue

    error = rpc_error(
        lambda: served.prediction.Predict(
            predict_request(TINY_MODEL, z=tf.make_tensor_proto(latents)), timeout=TIMEOUT_S
        )
    )

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(error.trailing_metadata() or ())
    assert int(trailing["retry-after"]) >= 1


def test_messages_over_the_body_limit_are_refused(served: Served) -> None:
    too_big = np.zeros((1, served.app.state.settings.max_body_bytes // 4 + 1), np.float32)
    request = predict_request(TINY_MODEL, z=tf.make_tensor_proto(too_big))

    error = rpc_error(lambda: served.prediction.Predict(request, timeout=TIMEOUT_S))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_calls_are_counted_by_method_and_code(served: Served) -> None:
    served.prediction.Predict(
        predict_request(TINY_MODEL, z=tf.make_tensor_proto(seeded_latents([2]))), timeout=TIMEOUT_S
    )

    page = served.http.get("/metrics").text

    assert 'genserve_grpc_requests_total{code="OK",method="Predict"}' in page
    assert 'genserve_grpc_requests_total{code="NOT_FOUND",method="Predict"}' in page
    assert 'genserve_grpc_request_duration_seconds_count{method="Predict"}' in page


def test_predict_shares_model_calls_with_generate(model_store: Path) -> None:
    request = predict_request(TINY_MODEL, z=tf.make_tensor_proto(seeded_latents([50, 51])))
    with (
        serving(model_store, max_delay_ms=500, adaptive_delay=False) as running,
        ThreadPoolExecutor(2) as pool,
    ):
        before = running.batching(TINY_MODEL)
        grpc_call = pool.submit(running.prediction.Predict, request, timeout=TIMEOUT_S)
        http_call = pool.submit(running.generated, TINY_MODEL, 50, 2)
        images, expected = tf.make_ndarray(grpc_call.result().outputs["images"]), http_call.result()
        after = running.batching(TINY_MODEL)

    assert after["model_calls"] - before["model_calls"] == 1
    assert max_abs_diff(images, expected) <= 1


def test_deadline_and_drain(model_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call whose deadline passes while queued is DEADLINE_EXCEEDED; draining finishes calls in flight
    and answers new ones UNAVAILABLE."""
    held = HeldModel(monkeypatch, TIMEOUT_S)
    request = predict_request(TINY_MODEL, z=tf.make_tensor_proto(seeded_latents([60])))
    with serving(model_store, max_concurrent_batches=1) as running, ThreadPoolExecutor(2) as pool:
        held.armed = True
        in_flight: Future[predict_pb2.PredictResponse] = pool.submit(
            running.prediction.Predict, request, timeout=TIMEOUT_S
        )
        assert held.started.wait(TIMEOUT_S)

        late = rpc_error(lambda: running.prediction.Predict(request, timeout=0.5))
        running.registry.begin_draining()
        refused = rpc_error(lambda: running.prediction.Predict(request, timeout=TIMEOUT_S))
        held.release.set()
        finished = in_flight.result(TIMEOUT_S)
        page = running.http.get("/metrics").text

    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 'genserve_grpc_requests_total{code="DEADLINE_EXCEEDED",method="Predict"}' in page
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert tf.make_ndarray(finished.outputs["images"]).shape[0] == 1


@pytest.mark.parametrize("value", [None, "", " "])
def test_grpc_api_is_off_unless_a_port_is_set(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("GENSERVE_GRPC_PORT", raising=False)
    else:
        monkeypatch.setenv("GENSERVE_GRPC_PORT", value)

    assert Settings().grpc_port is None
