"""Truncation and interpolation paths."""

from __future__ import annotations

import numpy as np

from app.latent.latents import interpolation_path, lerp, slerp, truncate
from genserve.conventions import latents_from_seeds


def test_truncation_scales_toward_the_origin() -> None:
    latents = latents_from_seeds([1], 8)
    np.testing.assert_allclose(truncate(latents, 0.5), latents * 0.5)


def test_slerp_keeps_norm_between_equal_norm_vectors_and_lerp_does_not() -> None:
    start = np.array([1.0, 0.0]) * 3
    end = np.array([0.0, 1.0]) * 3
    t = np.array([0.0, 0.5, 1.0])
    spherical = slerp(start, end, t)
    linear = lerp(start, end, t)
    np.testing.assert_allclose(np.linalg.norm(spherical, axis=1), [3, 3, 3])
    assert np.linalg.norm(linear[1]) < 2.2
    np.testing.assert_allclose(spherical[[0, 2]], linear[[0, 2]], atol=1e-12)


def test_slerp_of_parallel_vectors_falls_back_to_lerp() -> None:
    vector = np.array([1.0, 2.0])
    np.testing.assert_allclose(slerp(vector, vector * 2, np.array([0.5])), [[1.5, 3.0]])


def test_path_hits_keyframes_and_loops_without_repeating_the_first() -> None:
    keyframes = latents_from_seeds([1, 2, 3], 4)
    frames, positions = interpolation_path(keyframes, 5, "lerp")
    np.testing.assert_allclose(positions, [0, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(frames[[0, 2, 4]], keyframes, atol=1e-6)
    frames, positions = interpolation_path(keyframes, 6, "slerp", loop=True)
    np.testing.assert_allclose(positions, [0, 0.5, 1, 1.5, 2, 2.5])
    np.testing.assert_allclose(frames[0], keyframes[0], atol=1e-6)
