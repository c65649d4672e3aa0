"""Sound generators through the inference protocols: Open Inference Protocol v2 and TensorFlow Serving's REST and
gRPC APIs answer float32 `audio` through the same batcher as `POST /generate`; the OpenAI routes leave them out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2

from genserve.conventions import latents_from_seeds
from tests.app.audio_models import CLASSES, HUM, SAMPLES, TONE, ToneModels, publish_tones
from tests.app.protocol_helpers import Served, combined_store, predict_request, rpc_error, serving
from tests.training.savedmodels import LATENT_DIM

MAX_CLIPS = 3


@pytest.fixture(scope="module")
def model_store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny image model beside the two tones."""
    root = tmp_path_factory.mktemp("audio-protocols")
    tones = publish_tones(root / "tones")
    return combined_store(root / "store", tiny_store, tones)


@pytest.fixture(scope="module")
def tones(model_store: Path) -> ToneModels:
    return ToneModels(model_store)


@pytest.fixture(scope="module")
def served(model_store: Path) -> Iterator[Served]:
    with serving(model_store, max_clips=MAX_CLIPS) as running:
        yield running


def test_v2_infer_answers_the_models_audio(served: Served, tones: ToneModels) -> None:
    latents = latents_from_seeds([4, 5], LATENT_DIM)
    body = {
        "inputs": [
            {"name": "z", "datatype": "FP32", "shape": [2, LATENT_DIM], "data": latents.flatten().tolist()},
            {"name": "label", "datatype": "INT32", "shape": [2], "data": [2, 0]},
        ]
    }
    response = served.http.post(f"/v2/models/{TONE}/infer", json=body)
    assert response.status_code == 200
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("audio", "FP32", [2, SAMPLES])
    clips = np.asarray(output["data"], dtype=np.float32).reshape(2, SAMPLES)
    np.testing.assert_array_equal(clips, tones.clips(TONE, latents, [2, 0]))


def test_v2_metadata_describes_the_audio_signature(served: Served) -> None:
    response = served.http.get(f"/v2/models/{TONE}")
    assert response.status_code == 200
    body = response.json()
    assert {tensor["name"]: tensor["datatype"] for tensor in body["inputs"]} == {
        "z": "FP32",
        "label": "INT32",
    }
    assert body["outputs"] == [{"name": "audio", "datatype": "FP32", "shape": [-1, SAMPLES]}]


def test_tfserving_rest_predict_rows_and_columns(served: Served, tones: ToneModels) -> None:
    latents = latents_from_seeds([8, 9], LATENT_DIM)
    rows = served.http.post(f"/v1/models/{HUM}:predict", json={"instances": latents.tolist()})
    assert rows.status_code == 200
    np.testing.assert_array_equal(
        np.asarray(rows.json()["predictions"], np.float32), tones.clips(HUM, latents)
    )
    columns = served.http.post(
        f"/v1/models/{TONE}:predict", json={"inputs": {"z": latents.tolist(), "label": [1, 1]}}
    )
    assert columns.status_code == 200
    np.testing.assert_array_equal(
        np.asarray(columns.json()["outputs"], np.float32), tones.clips(TONE, latents, [1, 1])
    )


def test_tfserving_grpc_predict(served: Served, tones: ToneModels) -> None:
    latents = latents_from_seeds([12], LATENT_DIM)
    request = predict_request(
        TONE, z=tf.make_tensor_proto(latents), label=tf.make_tensor_proto([1], tf.int32)
    )
    response = served.prediction.Predict(request, timeout=30)
    clips = tf.make_ndarray(response.outputs["audio"])
    assert clips.dtype == np.float32
    np.testing.assert_array_equal(clips, tones.clips(TONE, latents, [1]))


def test_metadata_describes_float_audio_on_rest_and_grpc(served: Served) -> None:
    rest = served.http.get(f"/v1/models/{TONE}/metadata")
    assert rest.status_code == 200
    outputs = rest.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert outputs["audio"]["dtype"] == "DT_FLOAT"
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = TONE
    response = served.prediction.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    audio = signatures.signature_def["serving_default"].outputs["audio"]
    assert audio.dtype == tf.float32.as_datatype_enum
    assert [dim.size for dim in audio.tensor_shape.dim] == [-1, SAMPLES]


def test_protocols_refuse_more_clips_than_the_limit(served: Served) -> None:
    latents = latents_from_seeds(list(range(MAX_CLIPS + 1)), LATENT_DIM)
    response = served.http.post(f"/v1/models/{HUM}:predict", json={"instances": latents.tolist()})
    assert response.status_code == 400
    assert "z" in response.json()["error"]
    assert str(MAX_CLIPS) in response.json()["error"]
    error = rpc_error(
        lambda: served.prediction.Predict(predict_request(HUM, z=tf.make_tensor_proto(latents)), timeout=30)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_protocols_check_classes_of_a_conditional_tone(served: Served) -> None:
    latents = latents_from_seeds([1], LATENT_DIM)
    response = served.http.post(
        f"/v1/models/{TONE}:predict", json={"inputs": {"z": latents.tolist(), "label": [len(CLASSES)]}}
    )
    assert response.status_code == 400
    assert "label" in response.json()["error"]


def test_openai_models_leave_sound_generators_out(served: Served) -> None:
    response = served.http.get("/openai/v1/models")
    assert response.status_code == 200
    assert not {TONE, HUM} & {model["id"] for model in response.json()["data"]}
    completion = served.http.post("/openai/v1/completions", json={"model": TONE, "prompt": "a"})
    assert completion.status_code in (400, 404)
