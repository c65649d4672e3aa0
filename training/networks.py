"""The DCGAN's networks: the generator (a dense projection, then transposed convolutions up to the image size)
and the discriminator (strided convolutions to one logit), shared by the conditional GAN and the VAE."""

from __future__ import annotations

import keras

from genserve.conventions import check_channels
from training.options import SUPPORTED_IMAGE_SIZES, check_d_width

# The generator's layout by image size: the filters of its dense projection, of the stride-1 refining block on
# that base, and of each stride-2 stage before the output stage (which has one filter per channel). 28 and 32 are
# the tutorial's layout (from a 7x7 or 8x8 base); 64 adds a stage; 128 (spectrograms) adds another, with fewer
# filters at every stage, so that a 128x128 sample costs about what a 64x64 one does, and a thin projection (its
# dense layer holds most of a generator's weights), so that a published sound generator stays near 1.2 MB.
# The last number is the transposed convolutions' kernel: the tutorial's 5 up to 64 pixels; 4 at 128 (the
# spectrograms' size), a multiple of the stride, so that every output pixel gathers the same number of kernel taps
# and no checkerboard of alternating loud and quiet bins is left for Griffin-Lim to turn into hiss (docs/audio.md).
_GENERATOR_LAYOUTS: dict[int, tuple[int, int, list[int], int]] = {
    28: (256, 128, [64], 5),
    32: (256, 128, [64], 5),
    64: (256, 128, [128, 64], 5),
    128: (16, 64, [48, 32, 16], 4),
}
# The discriminator's filters per stride-2 convolution, by image size: down to a 7x7 or 8x8 map for 128.
_DISCRIMINATOR_FILTERS: dict[int, list[int]] = {
    28: [64, 128],
    32: [64, 128],
    64: [64, 128, 256],
    128: [16, 32, 64, 128],
}

# The tutorial uses LeakyReLU with Keras' default slope.
_LEAKY_SLOPE = 0.3

_DROPOUT_RATE = 0.3

_KERNEL_SIZE = 5


def check_latent_dim(latent_dim: int) -> int:
    """Return `latent_dim` if it is a usable latent size, else raise ValueError."""
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
    return latent_dim


def check_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Return `image_shape` if the DCGAN supports it, else raise ValueError saying what it supports."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (height, width, channels), got {image_shape!r}")
    height, width, channels = (int(size) for size in image_shape)
    if height != width or height not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(
            f"the DCGAN supports square images of {', '.join(map(str, SUPPORTED_IMAGE_SIZES))} pixels, got "
            f"{height}x{width}: resize the data with --image-size"
        )
    return height, width, check_channels(channels)


def build_generator(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    name: str = "generator",
    dtype_policy: str = "float32",
) -> keras.Model:
    """Latent vectors ``[N, latent_dim]`` to images ``[N, H, W, C]`` in [-1, 1].

    `dtype_policy` applies to the hidden layers (e.g. ``"mixed_bfloat16"``); the output layer stays float32.
    """
    check_latent_dim(latent_dim)
    layers = generator_layers(image_shape, dtype_policy)
    return keras.Sequential([keras.Input(shape=(latent_dim,), name="z"), *layers], name=name)


def generator_layers(
    image_shape: tuple[int, int, int], dtype_policy: str = "float32"
) -> list[keras.layers.Layer]:
    """The generator's layers from its flat input vector to the image, for any model that feeds them."""
    size, _, channels = check_image_shape(image_shape)
    projection, refine, stages, kernel = _GENERATOR_LAYOUTS[size]
    base = size // 2 ** (len(stages) + 1)
    hidden = {"dtype": dtype_policy}
    layers: list[keras.layers.Layer] = [
        keras.layers.Dense(base * base * projection, use_bias=False, name="project", **hidden),
        keras.layers.BatchNormalization(name="project_bn", **hidden),
        keras.layers.LeakyReLU(_LEAKY_SLOPE, name="project_act", **hidden),
        keras.layers.Reshape((base, base, projection), name="reshape", **hidden),
        *_transpose_block(refine, kernel, strides=1, name="refine", dtype_policy=dtype_policy),
    ]
    for index, filters in enumerate(stages, start=1):
        layers += _transpose_block(filters, kernel, strides=2, name=f"up{index}", dtype_policy=dtype_policy)
    layers.append(
        keras.layers.Conv2DTranspose(
            channels,
            kernel,
            strides=2,
            padding="same",
            use_bias=False,
            activation="tanh",
            name="to_image",
            dtype="float32",
        )
    )
    return layers


def _transpose_block(
    filters: int, kernel: int, *, strides: int, name: str, dtype_policy: str
) -> list[keras.layers.Layer]:
    return [
        keras.layers.Conv2DTranspose(
            filters,
            kernel,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"{name}_conv",
            dtype=dtype_policy,
        ),
        keras.layers.BatchNormalization(name=f"{name}_bn", dtype=dtype_policy),
        keras.layers.LeakyReLU(_LEAKY_SLOPE, name=f"{name}_act", dtype=dtype_policy),
    ]


def build_discriminator(
    image_shape: tuple[int, int, int],
    name: str = "discriminator",
    dtype_policy: str = "float32",
    spectral_norm: bool = False,
    width: float = 1.0,
) -> keras.Model:
    """Images ``[N, H, W, C]`` in [-1, 1] to one real-vs-fake logit each, ``[N, 1]``.

    `dtype_policy` applies to the hidden layers; the logit layer stays float32 so the loss is computed in it.
    `spectral_norm` wraps the convolutions and the logit layer in `keras.layers.SpectralNormalization`;
    `width` multiplies the convolutions' filter counts.
    """
    size, _, _ = check_image_shape(image_shape)
    layers = discriminator_layers(size, dtype_policy, spectral_norm=spectral_norm, width=width)
    return keras.Sequential([keras.Input(shape=tuple(image_shape), name="images"), *layers], name=name)


def discriminator_layers(
    image_size: int, dtype_policy: str = "float32", spectral_norm: bool = False, width: float = 1.0
) -> list[keras.layers.Layer]:
    """The discriminator's layers from an image-sized map (any number of channels) to one logit."""
    return [
        *discriminator_feature_layers(image_size, dtype_policy, spectral_norm=spectral_norm, width=width),
        logit_layer(spectral_norm),
    ]


def logit_layer(spectral_norm: bool = False) -> keras.layers.Layer:
    """The discriminator's float32 dense layer from its features to one logit."""
    dense = keras.layers.Dense(1, name="logit", dtype="float32")
    return _spectrally_normalized(dense) if spectral_norm else dense


def discriminator_feature_layers(
    image_size: int, dtype_policy: str = "float32", spectral_norm: bool = False, width: float = 1.0
) -> list[keras.layers.Layer]:
    """The discriminator's layers from an image-sized map to its flat feature vector (before the logit)."""
    check_d_width(width)
    filters = [max(1, round(count * width)) for count in _DISCRIMINATOR_FILTERS[image_size]]
    hidden = {"dtype": dtype_policy}
    weighted = _spectrally_normalized if spectral_norm else _unchanged
    layers: list[keras.layers.Layer] = []
    for index, count in enumerate(filters, start=1):
        conv = keras.layers.Conv2D(
            count, _KERNEL_SIZE, strides=2, padding="same", name=f"down{index}_conv", **hidden
        )
        layers += [
            weighted(conv),
            keras.layers.LeakyReLU(_LEAKY_SLOPE, name=f"down{index}_act", **hidden),
            keras.layers.Dropout(_DROPOUT_RATE, name=f"down{index}_dropout", **hidden),
        ]
    layers.append(keras.layers.Flatten(name="flatten", **hidden))
    return layers


def _unchanged(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer


def _spectrally_normalized(layer: keras.layers.Layer) -> keras.layers.Layer:
    # The wrapper itself runs in float32 so that it normalises the float32 kernel: under a mixed policy it
    # would read a bfloat16 copy and write that back, rounding the weights to bfloat16 at every step. The
    # wrapped layer still computes in its own policy's dtype.
    return keras.layers.SpectralNormalization(layer, name=f"{layer.name}_sn", dtype="float32")
