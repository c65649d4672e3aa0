"""What a generator made elsewhere answers, read from its shapes and one probe call (NumPy only).

A generator genserve did not train may output pixels in any of three ranges: ``tanh`` ([-1, 1], the DCGAN
tutorial's), ``sigmoid`` ([0, 1]) or ``uint8`` ([0, 255]). The importer (`training.importer`) bakes the
conversion to uint8 into the published graph; the service applies the same conversion to a bare TensorFlow
Serving SavedModel it serves as it is (`app.image.inferred`). Both find the range, the latent length and the
image shape here, so an imported model and a bare one agree on what a model is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np

from genserve.conventions import PIXEL_MAX, SUPPORTED_CHANNELS

OutputRange = Literal["tanh", "sigmoid", "uint8"]
OUTPUT_RANGES: tuple[OutputRange, ...] = get_args(OutputRange)
# The rows of the probe call that finds a model's output range: enough latents for the extremes to show.
PROBE_ROWS = 64
PROBE_SEED = 0
# How far outside [-1, 1] or [0, 1] a float output may stray (float error) and still count as in range.
_RANGE_SLACK = 1e-3

Dims = Sequence[int | None]


def probe_latents(latent_dim: int, rows: int = PROBE_ROWS) -> np.ndarray:
    """Standard-normal float32 latents, the same on every machine, for probe calls."""
    return np.random.RandomState(PROBE_SEED).randn(rows, latent_dim).astype(np.float32)


def latent_length(dims: Dims) -> int | None:
    """D when `dims` is a batch of latent vectors ``[None, D]``, else None."""
    if len(dims) == 2 and dims[1] is not None and dims[1] > 0:
        return int(dims[1])
    return None


def image_shape(dims: Dims) -> tuple[int, int, int]:
    """The (H, W, C) of an output ``[None, H, W, C]`` (C 1 or 3) or ``[None, H, W]`` (one channel).

    Raises ValueError naming what is wrong: not an image's rank, sizes only known when called, other channels.
    """
    shape = list(dims[1:])
    if len(shape) == 2:
        shape.append(1)
    if len(shape) != 3:
        raise ValueError(
            f"the output {_shown(dims)} is not an image: a generator returns [None, H, W, C] or [None, H, W]"
        )
    if any(size is None for size in shape):
        raise ValueError(
            f"the output {_shown(dims)} has sizes known only when called: a generator's image size must be fixed"
        )
    height, width, channels = (int(size) for size in shape if size is not None)
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(
            f"the output {_shown(dims)} has {channels} channels: images have 1 (grayscale) or 3 (RGB)"
        )
    return height, width, channels


def infer_output_range(outputs: np.ndarray) -> OutputRange:
    """The range a probe call's outputs lie in, or ValueError saying what was seen and how to go on."""
    values = np.asarray(outputs)
    if values.dtype == np.uint8:
        return "uint8"
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"the output is {values.dtype}, not numbers: a generator returns pixel values")
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "the outputs hold NaN or infinite values for standard-normal latents: check the model"
        )
    low, high = float(values.min()), float(values.max())
    if low >= -_RANGE_SLACK and high <= 1.0 + _RANGE_SLACK:
        return "sigmoid"
    if low >= -1.0 - _RANGE_SLACK and high <= 1.0 + _RANGE_SLACK:
        return "tanh"
    raise ValueError(
        f"outputs span {low:.3g}…{high:.3g}, none of [-1, 1] (tanh), [0, 1] (sigmoid) or uint8: pass "
        "--output-range or rescale your model"
    )


def to_unit_range(values: Any, output_range: OutputRange) -> Any:
    """A model's outputs (float NumPy arrays or TensorFlow tensors) in `output_range` as floats in [-1, 1]."""
    if output_range == "tanh":
        return values
    if output_range == "sigmoid":
        return values * 2.0 - 1.0
    return values / (PIXEL_MAX / 2) - 1.0


def from_unit_range(values: Any, output_range: OutputRange) -> Any:
    """Floats in [-1, 1] (arrays or tensors) as a model that outputs `output_range` takes its images."""
    if output_range == "tanh":
        return values
    if output_range == "sigmoid":
        return (values + 1.0) / 2.0
    return (values + 1.0) * (PIXEL_MAX / 2)


def to_pixels(outputs: np.ndarray, output_range: OutputRange, image: tuple[int, int, int]) -> np.ndarray:
    """A model's outputs as uint8 ``[B, H, W, C]`` pixels, rounded and clipped (NumPy)."""
    values = np.asarray(outputs).reshape((-1, *image))
    if output_range == "uint8":
        return np.clip(np.round(values), 0, PIXEL_MAX).astype(np.uint8)
    unit = to_unit_range(values.astype(np.float32), output_range)
    return np.clip(np.round((unit + 1.0) * (PIXEL_MAX / 2)), 0, PIXEL_MAX).astype(np.uint8)


def _shown(dims: Dims) -> str:
    return "[" + ", ".join("None" if size is None else str(size) for size in dims) + "]"
