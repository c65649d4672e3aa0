"""Validation of request fields whose limits come from settings or from the model (422 naming the field)."""

from __future__ import annotations

import math
import secrets
from typing import overload

import numpy as np

from app.api import defaults
from app.server.errors import InvalidParameter
from genserve import store
from genserve.conventions import MAX_SEED, cycled_labels
from genserve.store import ModelMetadata

# Seeds go up to 2**32 - 1: ten digits.
_MAX_DECIMAL_DIGITS = 10
# Longest piece of a request's own input that an error message quotes back.
MAX_SHOWN_CHARS = 48
# Explicit latents far outside the prior (|z| of a few units) only saturate the generator; beyond this they are
# surely a mistake.
MAX_LATENT_VALUE = 1e4


@overload
def parse_model_name(name: str) -> str: ...


@overload
def parse_model_name(name: None) -> None: ...


def parse_model_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not store.is_model_name(name):
        raise InvalidParameter(
            "model", f"must be 1-64 characters matching {store.MODEL_NAME_PATTERN}, got {shown(name)}"
        )
    return name


def parse_version(version: str | int | None) -> int | str | None:
    """None or 'latest' means the newest loaded version; else a positive integer or a label like 'canary'."""
    if version is None or version == "latest":
        return None
    text = str(version)
    number = store.parse_version_name(text)
    if number is not None:
        return number
    if store.is_label(text):
        return text
    raise InvalidParameter(
        "version", f"must be a positive integer, 'latest' or a version label, got {shown(text)}"
    )


def shown(value: object) -> str:
    """`value` as an error message may quote it: its repr, cut short so a message never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


def check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidParameter(field, f"must be between {low} and {high}, got {value}")
    return value


def check_truncation(psi: float | None) -> float:
    if psi is None:
        return defaults.TRUNCATION
    if not (math.isfinite(psi) and 0.0 < psi <= 1.0):
        raise InvalidParameter("truncation", f"must be in (0, 1], got {psi}")
    return psi


def seed_range(seed: int | None, count: int) -> list[int]:
    """Seeds seed, seed+1, ... for `count` images; a random start when none is given."""
    if seed is None:
        seed = secrets.randbelow(MAX_SEED - count + 2)
    check_range("seed", seed, 0, MAX_SEED)
    if seed + count - 1 > MAX_SEED:
        raise InvalidParameter("seed", f"seed + n - 1 must be at most {MAX_SEED}, got {seed + count - 1}")
    return list(range(seed, seed + count))


def parse_seed_list(text: str, max_count: int) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not 2 <= len(parts) <= max_count:
        raise InvalidParameter("seeds", f"needs between 2 and {max_count} keyframe seeds, got {len(parts)}")
    seeds = []
    for part in parts:
        seed = _decimal(part) if part else None
        if seed is None:
            raise InvalidParameter("seeds", f"must be comma-separated integers, got {shown(text)}")
        seeds.append(check_range("seeds", seed, 0, MAX_SEED))
    return seeds


def parse_latents(rows: list[list[float]], max_n: int) -> np.ndarray:
    """Explicit latent vectors as float32 ``[N, D]``: 1…max_n rows of one length, finite and of sane size."""
    if not 1 <= len(rows) <= max_n:
        raise InvalidParameter("latents", f"must hold between 1 and {max_n} vectors, got {len(rows)}")
    lengths = {len(row) for row in rows}
    if 0 in lengths:
        raise InvalidParameter("latents", "every vector needs at least one value, got an empty one")
    if len(lengths) > 1:
        raise InvalidParameter(
            "latents", f"every vector must have the same length, got lengths {sorted(lengths)}"
        )
    latents = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(latents).all():
        raise InvalidParameter("latents", "every value must be finite (no NaN or infinity)")
    if np.abs(latents).max() > MAX_LATENT_VALUE:
        raise InvalidParameter("latents", f"values must lie within ±{MAX_LATENT_VALUE:g}")
    return latents.astype(np.float32)


def check_latent_length(latents: np.ndarray, latent_dim: int) -> np.ndarray:
    """`latents` if each vector has the model's length, else a 422 naming `latents`."""
    if latents.shape[1] != latent_dim:
        raise InvalidParameter(
            "latents", f"vector 0 has length {latents.shape[1]}; this model needs {latent_dim}"
        )
    return latents


def labels_for(
    metadata: ModelMetadata, label: str | int | None, count: int, *, cycle: bool = True
) -> np.ndarray | None:
    """The class index of each of `count` images for a conditional model; None for unconditional ones.

    Without a label, image i gets class i % num_classes when `cycle` is set; otherwise a label is required.
    """
    if not metadata.conditional:
        if label is not None:
            raise InvalidParameter("label", f"model {metadata.name!r} is not conditional and takes no label")
        return None
    classes = metadata.class_names or []
    if label is None:
        if cycle:
            return cycled_labels(count, len(classes))
        raise InvalidParameter(
            "label", f"this model needs a label: one of {classes} or 0..{len(classes) - 1}"
        )
    index = _label_index(label, classes)
    return np.full((count,), index, dtype=np.int32)


def label_index(metadata: ModelMetadata, field: str, label: str | int) -> int:
    """The class index of one label given in `field`, for a conditional model."""
    if not metadata.conditional:
        raise InvalidParameter(field, f"model {metadata.name!r} is not conditional and takes no label")
    return _label_index(label, metadata.class_names or [], field)


def _label_index(label: str | int, classes: list[str], field: str = "label") -> int:
    text = str(label)
    if text in classes:
        return classes.index(text)
    index = _decimal(text)
    if index is not None and index < len(classes):
        return index
    raise InvalidParameter(field, f"must be one of {classes} or 0..{len(classes) - 1}, got {shown(text)}")


def _decimal(text: str) -> int | None:
    """A non-negative integer written in at most ten ASCII digits, else None (no "²", no 5,000-digit numbers)."""
    if len(text) <= _MAX_DECIMAL_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None
