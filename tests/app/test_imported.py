"""Generators made elsewhere, imported with `python -m training import` and served: every route answers as the
model itself does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from genserve.conventions import latents_from_seeds
from tests.app.helpers import decode_npy, max_abs_diff
from tests.app.protocol_helpers import wait_for_every_model
from tests.app.test_encode import image_files, shape_images
from tests.app.test_interpolate import frames
from tests.conftest import make_settings, wait_until_ready
from tests.training import foreign_models
from training.cli import main as training_main

TUTORIAL = "tutorial"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, keras.Model]:
    """The source models, fitted a few steps, by the name each is imported under."""
    encoder, decoder = foreign_models.vae_pair()
    decoder = foreign_models.fit_to_shapes(decoder, sigmoid=True)
    return {
        TUTORIAL: foreign_models.fit_to_shapes(foreign_models.tutorial_generator()),
        "rgb": foreign_models.fit_to_shapes(foreign_models.sigmoid_rgb_generator(), sigmoid=True),
        "digits": foreign_models.fit_to_shapes(foreign_models.conditional_generator()),
        "vae": decoder,
        "vae-encoder": encoder,
    }


def imported(source: Path, store: Path, name: str, *options: str) -> None:
    assert training_main(["import", str(source), "--name", name, "--store", str(store), *options]) == 0


@pytest.fixture(scope="module")
def client(models: dict[str, keras.Model], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A service over a store of imported models: the tutorial's as .keras, SavedModel and .h5, and the others."""
    root = tmp_path_factory.mktemp("imported")
    store = root / "model_store"
    tutorial = models[TUTORIAL]
    imported(foreign_models.save_keras(tutorial, root, "generator"), store, TUTORIAL)
    tutorial.export(root / "generator_savedmodel", verbose=False)
    imported(root / "generator_savedmodel", store, "tutorial-savedmodel")
    tutorial.save(root / "generator.h5")
    imported(root / "generator.h5", store, "tutorial-h5")
    imported(foreign_models.save_keras(models["rgb"], root, "rgb"), store, "rgb")
    digits = foreign_models.save_keras(models["digits"], root, "digits")
    imported(digits, store, "digits", "--label-input", "digit", "--class-names", "zero,one,two")
    encoder = foreign_models.save_keras(models["vae-encoder"], root, "encoder")
    imported(
        foreign_models.save_keras(models["vae"], root, "decoder"), store, "vae", "--encoder", str(encoder)
    )
    with TestClient(create_app(make_settings(store, default_model=TUTORIAL))) as test_client:
        wait_until_ready(test_client)
        wait_for_every_model("", get=test_client.get)
        yield test_client


def generated(client: TestClient, model: str, seed: int, n: int, **query: object) -> np.ndarray:
    response = client.post(
        "/generate", params={"model": model, "seed": seed, "n": n, "format": "npy", **query}
    )
    assert response.status_code == 200, response.text
    return decode_npy(response.content)


def pixels(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    return np.clip(np.round(np.asarray(values) * scale + offset), 0, 255)


@pytest.mark.parametrize("name", [TUTORIAL, "tutorial-savedmodel", "tutorial-h5"])
def test_seeded_images_are_the_models_own(
    client: TestClient, models: dict[str, keras.Model], name: str
) -> None:
    latents = latents_from_seeds(range(7, 11), foreign_models.TUTORIAL_LATENT_DIM)
    expected = pixels(models[TUTORIAL](latents, training=False), 127.5, 127.5)

    images = generated(client, name, seed=7, n=4)

    assert images.shape == (4, 28, 28, 1)
    assert max_abs_diff(images, expected) <= 1
    assert len({image.tobytes() for image in images}) == 4


def test_the_standard_protocols_answer_with_the_same_pixels(client: TestClient) -> None:
    expected = generated(client, TUTORIAL, seed=3, n=2)
    latents = latents_from_seeds([3, 4], foreign_models.TUTORIAL_LATENT_DIM)

    rest = client.post(f"/v1/models/{TUTORIAL}:predict", json={"instances": latents.tolist()})
    v2 = client.post(
        f"/v2/models/{TUTORIAL}/infer",
        json={
            "inputs": [{"name": "z", "datatype": "FP32", "shape": [2, 100], "data": latents.ravel().tolist()}]
        },
    )

    assert rest.status_code == 200 and v2.status_code == 200, (rest.text, v2.text)
    assert max_abs_diff(np.array(rest.json()["predictions"]), expected) <= 1
    output = v2.json()["outputs"][0]
    assert max_abs_diff(np.array(output["data"]).reshape(output["shape"]), expected) <= 1


def test_interpolation_runs_between_the_seeds_images(client: TestClient) -> None:
    path = frames(client, model=TUTORIAL, start=5, end=9, steps=4)

    assert len(path) == 4
    assert max_abs_diff(path[0], generated(client, TUTORIAL, seed=5, n=1)[0]) <= 1
    assert max_abs_diff(path[-1], generated(client, TUTORIAL, seed=9, n=1)[0]) <= 1


def test_a_sigmoid_rgb_model_is_scaled_from_zero_one(
    client: TestClient, models: dict[str, keras.Model]
) -> None:
    latents = latents_from_seeds(range(2), foreign_models.SMALL_LATENT_DIM)

    images = generated(client, "rgb", seed=0, n=2)

    assert images.shape == (2, 32, 32, 3)
    assert max_abs_diff(images, pixels(models["rgb"](latents, training=False), 255.0, 0.0)) <= 1


def test_a_class_input_makes_the_label_pick_the_class(
    client: TestClient, models: dict[str, keras.Model]
) -> None:
    latents = latents_from_seeds([4, 4, 4], foreign_models.SMALL_LATENT_DIM)
    classes = np.array([[0], [1], [2]], dtype=np.int32)
    expected = pixels(models["digits"]([latents, classes], training=False), 127.5, 127.5)

    by_class = [generated(client, "digits", seed=4, n=1, label=name)[0] for name in ("zero", "one", "two")]

    for image, wanted in zip(by_class, expected, strict=True):
        assert max_abs_diff(image, wanted) <= 1
    assert max_abs_diff(by_class[0], by_class[2]) > 1


def test_an_encoder_makes_a_vae_that_reconstructs_through_both_models(
    client: TestClient, models: dict[str, keras.Model]
) -> None:
    images = shape_images(2)[:, 6:22, 6:22, :1]
    mean = models["vae-encoder"](images.astype(np.float32) / 255.0, training=False)[0]
    expected = pixels(models["vae"](mean, training=False), 255.0, 0.0)

    response = client.post(
        "/reconstruct", params={"model": "vae", "format": "npy"}, files=image_files(images)
    )

    assert response.status_code == 200, response.text
    assert max_abs_diff(decode_npy(response.content), expected) <= 1


def test_models_lists_them_as_imported_with_their_origin(client: TestClient) -> None:
    listed = {model["name"]: model for model in client.get("/models").json()["models"]}

    version = listed["digits"]["versions"][0]
    assert version["source"] == "imported" and version["kind"] == "cdcgan"
    assert version["classes"] == ["zero", "one", "two"]
    origin = version["origin"]
    assert (origin["file"], origin["label_input"], origin["output_range"]) == (
        "digits.keras",
        "digit",
        "tanh",
    )
    assert len(origin["sha256"]) == 64
    assert listed["vae"]["versions"][0]["kind"] == "vae"
    assert listed["rgb"]["versions"][0]["origin"]["output_range"] == "sigmoid"
