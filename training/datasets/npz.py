"""``npz:PATH``: an image array, optionally with labels, from a NumPy ``.npz`` file."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from training.datasets.core import Split, held_out_mask

_NPZ_IMAGE_KEYS = ("images", "x", "x_train")
_NPZ_LABEL_KEYS = ("labels", "y", "y_train")


def read_generic_npz(path: Path, split: Split) -> tuple[np.ndarray, np.ndarray | None]:
    """The images (and labels, if any) of `split`: the file's own test arrays, else every tenth example."""
    with open_npz(path) as archive:
        keys = list(archive.files)
        image_key = _pick_image_key(keys, path)
        if image_key == "x_train" and "x_test" in keys:
            # A separate test array replaces the every-tenth hold-out rule.
            suffix = "train" if split == "train" else "test"
            labels_key = f"y_{suffix}"
            return archive[f"x_{suffix}"], (archive[labels_key] if labels_key in keys else None)
        images = archive[image_key]
        label_key = next((key for key in _NPZ_LABEL_KEYS if key in keys), None)
        labels = archive[label_key] if label_key is not None else None
    mask = held_out_mask(len(images), split)
    return images[mask], (labels[mask] if labels is not None else None)


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """The archive at `path`, or ValueError saying it is not a readable ``.npz``."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zlib.error) as error:
        raise ValueError(f"{str(path)!r} is not a readable .npz file ({error})") from error


def _pick_image_key(keys: list[str], path: Path) -> str:
    for key in _NPZ_IMAGE_KEYS:
        if key in keys:
            return key
    if len(keys) == 1:
        return keys[0]
    raise ValueError(
        f"{str(path)!r} holds arrays {keys}: name the image array one of {', '.join(_NPZ_IMAGE_KEYS)}"
    )
