"""Image datasets for training and evaluation: float32 ``[N, H, W, C]`` arrays scaled to [-1, 1].

Specs understood by `load_dataset`:

- ``mnist``, ``fashion_mnist``: downloaded by Keras, or read from ``data_path`` (a Keras-format ``.npz``
  or the folder holding the four IDX ``.gz`` files of the original distribution).
- ``shapes``: procedural coloured circles, squares and triangles; needs no files.
- ``folder:PATH``: every PNG/JPEG/WebP under PATH; top-level subfolders become classes.
- ``npz:PATH``: an ``.npz`` holding an image array and optionally labels.

Folders and npz files without a separate test array hold out every tenth example (indices 9, 19, 29, ...)
as the test split; the train split is the rest. Interleaving keeps every class in both splits even when
the examples are sorted by class. With fewer than ten examples both splits use all of them.
"""

from training.datasets.core import (
    DatasetNotFoundError,
    ImageDataset,
    Split,
    default_cache_dir,
    make_tf_dataset,
)
from training.datasets.loading import DATASET_NAMES, load_dataset
from training.datasets.shapes import shapes_images

__all__ = [
    "DATASET_NAMES",
    "DatasetNotFoundError",
    "ImageDataset",
    "Split",
    "default_cache_dir",
    "load_dataset",
    "make_tf_dataset",
    "shapes_images",
]
