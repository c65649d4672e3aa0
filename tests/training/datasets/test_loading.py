"""`load_dataset`'s options and specs."""

from __future__ import annotations

import pytest

from training.datasets import DATASET_NAMES, load_dataset


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"limit": 0}, "limit", id="limit"),
        pytest.param({"channels": 2}, "channels", id="channels"),
        pytest.param({"image_size": 0}, "image_size", id="image-size"),
        pytest.param({"data_path": "/x"}, "generated", id="shapes-with-path"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset("shapes", **options)  # type: ignore[arg-type]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="fashion_mnist") as caught:
        load_dataset("cifar10")
    assert all(name in str(caught.value) for name in DATASET_NAMES)


def test_folder_spec_without_path_asks_for_one() -> None:
    with pytest.raises(ValueError, match="folder:PATH"):
        load_dataset("folder")
