"""What the runtimes of generators that draw from latents share: the inputs of their warm-up calls."""

from __future__ import annotations

import numpy as np

from genserve import store


def warm_up_inputs(size: int, latent_dim: int, input_names: list[str]) -> dict[str, np.ndarray]:
    """Zero latents (and class 0) for `size` outputs of a generator drawing from latents: a warm-up batch."""
    inputs = {store.LATENT_INPUT: np.zeros((size, latent_dim), dtype=np.float32)}
    if store.LABEL_INPUT in input_names:
        inputs[store.LABEL_INPUT] = np.zeros((size,), dtype=np.int32)
    return inputs
