from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from training.datasets import (
    DATASET_NAMES,
    DatasetNotFoundError,
    ImageDataset,
    load_dataset,
    make_tf_dataset,
    shapes_images,
    to_uint8,
)

# --- fixture files in the real formats -------------------------------------------------------------------


def _digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, size=(count, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # pin the extremes so the scaling is checkable
    return images, rng.randint(0, 10, size=count).astype(np.uint8)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, count, seed in (("train", 12, 1), ("t10k", 4, 2)):
        images, labels = _digits(count, seed)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def keras_npz(tmp_path: Path) -> Path:
    x_train, y_train = _digits(20, 3)
    x_test, y_test = _digits(6, 4)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _save_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


# --- mnist / fashion_mnist -------------------------------------------------------------------------------


def test_mnist_reads_keras_npz_and_scales_to_unit_range(keras_npz: Path) -> None:
    train = load_dataset("mnist", data_path=keras_npz)
    test = load_dataset("mnist", data_path=keras_npz, split="test")

    expected_images, expected_labels = _digits(20, 3)
    assert train.name == "mnist"
    assert train.images.dtype == np.float32
    assert train.image_shape == (28, 28, 1)
    assert len(train) == 20 and len(test) == 6
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    np.testing.assert_array_equal(to_uint8(train.images[..., 0]), expected_images)
    assert train.labels is not None and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.labels, expected_labels)
    assert train.class_names == [str(digit) for digit in range(10)]


def test_fashion_mnist_reads_idx_folder_or_one_of_its_files(idx_folder: Path) -> None:
    from_folder = load_dataset("fashion_mnist", data_path=idx_folder)
    from_file = load_dataset("fashion_mnist", data_path=idx_folder / "train-images-idx3-ubyte.gz")
    held_out = load_dataset("fashion_mnist", data_path=str(idx_folder), split="test")

    expected_images, expected_labels = _digits(12, 1)
    np.testing.assert_array_equal(to_uint8(from_folder.images[..., 0]), expected_images)
    np.testing.assert_array_equal(from_folder.labels, expected_labels)
    np.testing.assert_array_equal(from_file.images, from_folder.images)
    assert len(held_out) == 4
    assert from_folder.class_names is not None and from_folder.class_names[0] == "T-shirt/top"
    assert len(from_folder.class_names) == 10


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: b"\x01\x02" + raw[2:], id="bad-magic"),
        pytest.param(lambda raw: raw[:-10], id="truncated-data"),
    ],
)
def test_corrupt_idx_raises_naming_the_file(idx_folder: Path, damage: Callable[[bytes], bytes]) -> None:
    path = idx_folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))

    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion_mnist", data_path=idx_folder)


def test_idx_that_is_not_gzip_raises_corrupt(idx_folder: Path) -> None:
    (idx_folder / "train-labels-idx1-ubyte.gz").write_bytes(b"definitely not gzip")

    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("fashion_mnist", data_path=idx_folder)


def test_missing_data_path_raises_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mnist.npz"

    with pytest.raises(DatasetNotFoundError, match="nowhere") as caught:
        load_dataset("mnist", data_path=missing)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, ValueError)


def test_folder_without_mnist_files_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_path=tmp_path)


def test_mnist_download_failure_tells_to_pass_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline() -> None:
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)

    with pytest.raises(ValueError, match="--data PATH"):
        load_dataset("mnist")


# --- folder:PATH -----------------------------------------------------------------------------------------


def test_folder_with_class_subfolders_skips_corrupt_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _save_image(tmp_path / "cats" / "a.png", (250, 10, 10))
    _save_image(tmp_path / "cats" / "b.JPG", (240, 20, 20))
    _save_image(tmp_path / "dogs" / "nested" / "c.webp", (10, 10, 250))
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")

    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(f"folder:{tmp_path}", image_size=8)

    assert "broken.png" in caplog.text
    assert dataset.image_shape == (8, 8, 3)
    assert dataset.class_names == ["cats", "dogs"]
    np.testing.assert_array_equal(dataset.labels, [0, 0, 1])
    assert to_uint8(dataset.images[2])[..., 2].min() > 200  # the blue WebP came through in order


def test_folder_default_size_and_flat_folder_has_no_labels(tmp_path: Path) -> None:
    _save_image(tmp_path / "one.png", (0, 0, 0), size=(100, 80))
    _save_image(tmp_path / "two.jpeg", (255, 255, 255), size=(30, 50))

    dataset = load_dataset(f"folder:{tmp_path}")

    assert dataset.image_shape == (64, 64, 3)
    assert dataset.labels is None and dataset.class_names is None


def test_folder_centre_crops_to_a_square(tmp_path: Path) -> None:
    image = np.zeros((20, 60, 3), dtype=np.uint8)
    image[:, 20:40] = 255  # only the centre square is white
    Image.fromarray(image).save(tmp_path / "wide.png")

    dataset = load_dataset(f"folder:{tmp_path}", image_size=10)

    assert to_uint8(dataset.images).min() == 255


def test_folder_holds_out_every_tenth_image(tmp_path: Path) -> None:
    for index in range(20):
        _save_image(tmp_path / f"{index:02d}.png", (index * 10, 0, 0), size=(4, 4))

    train = load_dataset(f"folder:{tmp_path}", image_size=4)
    test = load_dataset(f"folder:{tmp_path}", image_size=4, split="test")

    assert (len(train), len(test)) == (18, 2)
    np.testing.assert_array_equal(to_uint8(test.images)[:, 0, 0, 0], [90, 190])
    assert not set(to_uint8(test.images)[:, 0, 0, 0]) & set(to_uint8(train.images)[:, 0, 0, 0])


def test_small_folder_uses_every_image_for_both_splits(tmp_path: Path) -> None:
    for index in range(3):
        _save_image(tmp_path / f"{index}.png", (index, 0, 0), size=(4, 4))

    assert len(load_dataset(f"folder:{tmp_path}", split="test", image_size=4)) == 3


def test_folder_without_readable_images_raises_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"garbage")

    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        load_dataset(f"folder:{tmp_path}")


def test_empty_or_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no readable"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError, match="missing-dir"):
        load_dataset(f"folder:{tmp_path / 'missing-dir'}")


# --- npz:PATH --------------------------------------------------------------------------------------------


def test_npz_uint8_with_labels_uses_every_tenth_as_test(tmp_path: Path) -> None:
    images = np.arange(30, dtype=np.uint8)[:, None, None, None] * np.ones((1, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(30) % 3)

    train = load_dataset(f"npz:{tmp_path / 'data.npz'}")
    test = load_dataset(f"npz:{tmp_path / 'data.npz'}", split="test")

    assert (len(train), len(test)) == (27, 3)
    np.testing.assert_array_equal(to_uint8(test.images)[:, 0, 0, 0], [9, 19, 29])
    np.testing.assert_array_equal(test.labels, [0, 1, 2])
    assert train.class_names is None


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        pytest.param(np.array([0.0, 0.5, 1.0]), [-1.0, 0.0, 1.0], id="float-0-1"),
        pytest.param(np.array([-1.0, 0.0, 1.0]), [-1.0, 0.0, 1.0], id="float-minus1-1"),
        pytest.param(np.array([0, 255, 51], dtype=np.uint8), [-1.0, 1.0, -0.6], id="uint8"),
    ],
)
def test_npz_detects_pixel_range(tmp_path: Path, pixels: np.ndarray, expected: list[float]) -> None:
    np.savez(tmp_path / "only.npz", whatever=np.broadcast_to(pixels[:, None, None], (3, 2, 2)).copy())

    dataset = load_dataset(f"npz:{tmp_path / 'only.npz'}")

    assert dataset.image_shape == (2, 2, 1)
    np.testing.assert_allclose(dataset.images[:, 0, 0, 0], expected, atol=1e-6)


def test_npz_with_x_test_uses_it_as_held_out(keras_npz: Path) -> None:
    assert len(load_dataset(f"npz:{keras_npz}", split="test")) == 6
    assert load_dataset(f"npz:{keras_npz}").labels is not None


def test_npz_with_ambiguous_arrays_says_which_key_to_use(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))

    with pytest.raises(ValueError, match="images"):
        load_dataset(f"npz:{tmp_path / 'two.npz'}")


# --- shapes ----------------------------------------------------------------------------------------------


def test_shapes_are_deterministic_in_the_seed() -> None:
    first, first_labels = shapes_images(64, seed=5)
    again, again_labels = shapes_images(64, seed=5)
    other, _ = shapes_images(64, seed=6)

    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_labels, again_labels)
    assert not np.array_equal(first, other)


def test_shapes_dataset_defaults() -> None:
    train = load_dataset("shapes")
    test = load_dataset("shapes", split="test")

    assert train.image_shape == (28, 28, 3) and len(train) == 2048 and len(test) == 512
    assert train.images.dtype == np.float32
    assert -1.0 <= train.images.min() and train.images.max() <= 1.0
    assert train.class_names == ["circle", "square", "triangle"]
    assert train.labels is not None and set(np.unique(train.labels)) == {0, 1, 2}
    assert not np.array_equal(train.images[:512], test.images)


def test_shapes_fill_their_bounding_box_as_their_name_says() -> None:
    images, labels = shapes_images(300, image_size=32, seed=1)
    fills = np.array([_bounding_box_fill(image) for image in images])

    square, circle, triangle = (fills[labels == label].mean() for label in (1, 0, 2))
    assert square > 0.9
    assert 0.7 < circle < 0.85  # pi / 4
    assert 0.4 < triangle < 0.62


def _bounding_box_fill(image: np.ndarray) -> float:
    inside = image.max(axis=-1) > -0.4  # shapes are bright, the background dark
    rows, columns = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    box = inside[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    return float(box.mean())


def test_shapes_at_other_size_and_grayscale() -> None:
    dataset = load_dataset("shapes", image_size=16, channels=1, limit=10)

    assert dataset.image_shape == (16, 16, 1) and len(dataset) == 10


def test_generation_is_fast() -> None:
    import time

    started = time.perf_counter()
    shapes_images(2048)
    assert time.perf_counter() - started < 1.0


# --- conversions, limits and bad input -------------------------------------------------------------------


def test_resize_and_gray_to_rgb(keras_npz: Path) -> None:
    dataset = load_dataset("mnist", data_path=keras_npz, image_size=14, channels=3, limit=5)

    assert dataset.image_shape == (14, 14, 3) and len(dataset) == 5
    np.testing.assert_array_equal(dataset.images[..., 0], dataset.images[..., 2])
    assert -1.0 <= dataset.images.min() and dataset.images.max() <= 1.0


def test_rgb_to_gray_uses_luma(tmp_path: Path) -> None:
    _save_image(tmp_path / "white.png", (255, 255, 255), size=(4, 4))
    _save_image(tmp_path / "red.png", (255, 0, 0), size=(4, 4))

    dataset = load_dataset(f"folder:{tmp_path}", image_size=4, channels=1)

    assert dataset.image_shape == (4, 4, 1)
    np.testing.assert_allclose(dataset.images[:, 0, 0, 0], [0.299 * 2 - 1, 1.0], atol=1e-5)


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


# --- ImageDataset, tf.data and uint8 ---------------------------------------------------------------------


def _tiny_dataset(labels: bool = True) -> ImageDataset:
    images = np.linspace(-1, 1, 10 * 4 * 4 * 1, dtype=np.float32).reshape(10, 4, 4, 1)
    return ImageDataset("tiny", images, np.arange(10, dtype=np.int64) if labels else None, None)


def test_make_tf_dataset_batches_with_and_without_labels() -> None:
    dataset = _tiny_dataset()

    images_only = list(make_tf_dataset(dataset, 4, seed=0).as_numpy_iterator())
    labelled = list(make_tf_dataset(dataset, 4, seed=0, with_labels=True, drop_remainder=False))

    assert [batch.shape for batch in images_only] == [(4, 4, 4, 1), (4, 4, 4, 1)]
    assert [len(labels) for _, labels in labelled] == [4, 4, 2]
    seen = np.concatenate([labels.numpy() for _, labels in labelled])
    assert sorted(seen) == list(range(10))


def test_make_tf_dataset_shuffle_is_seeded() -> None:
    def order(seed: int) -> list[int]:
        batches = make_tf_dataset(_tiny_dataset(), 10, seed=seed, with_labels=True)
        return [int(label) for _, labels in batches for label in labels]

    assert order(1) == order(1)
    assert order(1) != order(2)
    unshuffled = make_tf_dataset(_tiny_dataset(), 10, seed=0, shuffle=False, with_labels=True)
    assert [int(label) for _, labels in unshuffled for label in labels] == list(range(10))


def test_make_tf_dataset_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="no labels"):
        make_tf_dataset(_tiny_dataset(labels=False), 2, seed=0, with_labels=True)
    with pytest.raises(ValueError, match="drop_remainder=False"):
        make_tf_dataset(_tiny_dataset(), 11, seed=0)


def test_image_dataset_properties_and_validation() -> None:
    dataset = _tiny_dataset()

    assert dataset.image_shape == (4, 4, 1) and len(dataset) == 10
    with pytest.raises(ValueError, match="float32"):
        ImageDataset("bad", np.zeros((2, 4, 4, 1), dtype=np.float64), None, None)


def test_to_uint8_maps_the_unit_range() -> None:
    result = to_uint8(np.array([-1.5, -1.0, 0.0, 1.0, 2.0], dtype=np.float32))

    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, [0, 0, 128, 255, 255])
