"""Latent-space geometry for serving: truncation toward the prior's mean, and paths between keyframes.

A seed's latent is a convention shared with training: `genserve.conventions.latents_from_seeds`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

InterpolationMethod = Literal["slerp", "lerp"]


def truncate(latents: np.ndarray, psi: float) -> np.ndarray:
    """Pull latents toward the prior's mean (the origin) by factor psi in (0, 1]."""
    return (latents * np.float32(psi)).astype(np.float32)


def lerp(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[:, None]
    return (1.0 - t) * start[None, :] + t * end[None, :]


def slerp(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation; falls back to lerp when the vectors are (anti)parallel."""
    start64, end64 = start.astype(np.float64), end.astype(np.float64)
    cos_omega = np.dot(start64, end64) / (np.linalg.norm(start64) * np.linalg.norm(end64) + 1e-12)
    omega = np.arccos(np.clip(cos_omega, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return lerp(start64, end64, t)
    t = t[:, None]
    weight_start = np.sin((1.0 - t) * omega) / np.sin(omega)
    weight_end = np.sin(t * omega) / np.sin(omega)
    return weight_start * start64[None, :] + weight_end * end64[None, :]


def interpolation_path(
    keyframes: np.ndarray, steps: int, method: InterpolationMethod, *, loop: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`steps` latents evenly spaced along the keyframe path, and each frame's position on it.

    Positions run from 0 (first keyframe) to K-1 (last); with `loop` the path returns to the
    first keyframe and the closing frame is left out, so the animation repeats seamlessly.
    """
    if loop:
        keyframes = np.concatenate([keyframes, keyframes[:1]], axis=0)
        positions = np.linspace(0.0, len(keyframes) - 1, steps + 1)[:-1]
    else:
        positions = np.linspace(0.0, len(keyframes) - 1, steps)
    segment = np.minimum(positions.astype(np.int64), len(keyframes) - 2)
    local_t = positions - segment
    blend = slerp if method == "slerp" else lerp
    frames = np.empty((steps, keyframes.shape[1]), dtype=np.float32)
    for index in np.unique(segment):
        mask = segment == index
        frames[mask] = blend(keyframes[index], keyframes[index + 1], local_t[mask])
    return frames, positions
