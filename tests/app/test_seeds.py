"""Seeds on every path: image i of a request with `seed=s` is the image of seed s+i, however many are asked for.

Up to 16 seeds are turned into latents inline, more on a worker thread; both paths must follow
`genserve.conventions.latents_from_seeds` for every row, not only the first.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from genserve.conventions import MAX_SEED, latents_from_seeds
from tests.app.helpers import decode_npy, max_abs_diff
from tests.conftest import TINY_LATENT_DIM

SEED = 4242
# Rows on both sides of the 16 seeds drawn inline, and the last of a full request.
ROWS = [0, 1, 15, 16, 17, 40, 63]


def generate_npy(client: TestClient, n: int, seed: int) -> np.ndarray:
    response = client.post("/generate", params={"n": n, "seed": seed, "format": "npy"})
    assert response.status_code == 200, response.text
    return decode_npy(response.content)


def test_row_i_of_a_large_request_is_the_image_of_seed_plus_i(client: TestClient) -> None:
    together = generate_npy(client, 64, SEED)
    assert together.shape[0] == 64
    for i in ROWS:
        alone = generate_npy(client, 1, SEED + i)[0]
        # Within one grey level: another batch size may round a float differently, but never picks a seed.
        assert max_abs_diff(together[i], alone) <= 1, i
        # That has teeth: the neighbouring seed's image is further away.
        neighbour = together[i + 1] if i + 1 < len(together) else together[i - 1]
        assert max_abs_diff(neighbour, alone) > 1, i


@pytest.mark.parametrize(
    ("n", "seed"),
    [(16, SEED), (17, SEED), (64, SEED), (64, MAX_SEED - 63)],
    ids=["inline", "worker-thread", "full-request", "largest-seeds"],
)
def test_every_latent_in_json_follows_the_seed_convention(client: TestClient, n: int, seed: int) -> None:
    response = client.post(
        "/generate", params={"n": n, "seed": seed, "format": "json", "include_latents": True}
    )
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert [image["seed"] for image in images] == list(range(seed, seed + n))
    latents = np.array([image["latent"] for image in images], dtype=np.float32)
    expected = latents_from_seeds(range(seed, seed + n), TINY_LATENT_DIM)
    assert latents.shape == (n, TINY_LATENT_DIM)
    np.testing.assert_array_equal(latents, expected)
    assert response.headers["x-seeds"] == f"{seed}-{seed + n - 1}"
