"""genserve.outputs: reading a foreign generator's latent length, image shape and output range."""

from __future__ import annotations

import numpy as np
import pytest

from genserve import outputs


@pytest.mark.parametrize(
    ("values", "found"),
    [
        (np.array([-0.9, 0.2, 0.99], dtype=np.float32), "tanh"),
        (np.array([0.0, 0.5, 1.0], dtype=np.float32), "sigmoid"),
        (np.array([0, 17, 255], dtype=np.uint8), "uint8"),
    ],
)
def test_the_output_range_is_read_from_the_values(values: np.ndarray, found: str) -> None:
    assert outputs.infer_output_range(values) == found


def test_values_out_of_every_range_are_refused_with_their_span() -> None:
    with pytest.raises(ValueError, match=r"outputs span -3\.2…4\.1, none of .*pass --output-range"):
        outputs.infer_output_range(np.array([-3.2, 0.0, 4.1], dtype=np.float32))


def test_nan_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        outputs.infer_output_range(np.array([0.0, np.nan], dtype=np.float32))


@pytest.mark.parametrize(
    ("dims", "shape"),
    [((None, 28, 28, 1), (28, 28, 1)), ((None, 28, 28), (28, 28, 1)), ((None, 32, 16, 3), (32, 16, 3))],
)
def test_image_shapes(dims: tuple[int | None, ...], shape: tuple[int, int, int]) -> None:
    assert outputs.image_shape(dims) == shape


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ((None, 10), "is not an image"),
        ((None, None, 28, 1), "sizes known only when called"),
        ((None, 28, 28, 4), "4 channels"),
    ],
)
def test_shapes_that_are_not_images_are_refused(dims: tuple[int | None, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        outputs.image_shape(dims)


def test_latent_length_takes_only_rows_of_fixed_length() -> None:
    assert outputs.latent_length((None, 100)) == 100
    assert outputs.latent_length((None, None)) is None
    assert outputs.latent_length((None, 4, 4)) is None


@pytest.mark.parametrize(
    ("output_range", "values"),
    [
        ("tanh", np.array([-1.0, 0.0, 1.0])),
        ("sigmoid", np.array([0.0, 0.5, 1.0])),
        ("uint8", np.array([0.0, 127.5, 255.0])),
    ],
)
def test_every_range_maps_to_the_same_pixels(output_range: outputs.OutputRange, values: np.ndarray) -> None:
    pixels = outputs.to_pixels(values.reshape(1, 1, 3, 1), output_range, (1, 3, 1))

    assert pixels.dtype == np.uint8 and pixels.ravel().tolist() == [0, 128, 255]
    unit = outputs.to_unit_range(values, output_range)
    np.testing.assert_allclose(outputs.from_unit_range(unit, output_range), values, atol=1e-6)
