"""Generators made the way people make them outside genserve, for the import and bare-SavedModel tests.

`tutorial_generator` is TensorFlow's DCGAN tutorial's ``make_generator_model()``, layer by layer; the others are
the variations users bring: sigmoid RGB output, a class input, a VAE's encoder and decoder. Each is fitted a
few steps towards procedural shapes, so its outputs vary with the latent as a trained model's do.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.datasets.shapes import shapes_images

TUTORIAL_LATENT_DIM = 100
SMALL_LATENT_DIM = 8
CLASSES = 3


def tutorial_generator() -> keras.Model:
    """The DCGAN tutorial's generator: 100-d latents to 28x28x1 images in [-1, 1] (tanh)."""
    model = keras.Sequential()
    model.add(keras.Input(shape=(TUTORIAL_LATENT_DIM,)))
    model.add(layers.Dense(7 * 7 * 256, use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(layers.Reshape((7, 7, 256)))
    model.add(layers.Conv2DTranspose(128, (5, 5), strides=(1, 1), padding="same", use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(layers.Conv2DTranspose(64, (5, 5), strides=(2, 2), padding="same", use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(
        layers.Conv2DTranspose(1, (5, 5), strides=(2, 2), padding="same", use_bias=False, activation="tanh")
    )
    return model


def sigmoid_rgb_generator() -> keras.Model:
    """8-d latents to 32x32x3 images in [0, 1] (sigmoid)."""
    latent = keras.Input(shape=(SMALL_LATENT_DIM,), name="noise")
    x = layers.Dense(8 * 8 * 16, activation="relu")(latent)
    x = layers.Reshape((8, 8, 16))(x)
    x = layers.Conv2DTranspose(8, 4, strides=2, padding="same", activation="relu")(x)
    image = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="sigmoid", name="rgb")(x)
    return keras.Model(latent, image)


def conditional_generator() -> keras.Model:
    """8-d latents and a class index ``[None, 1]`` to 16x16x1 images in [-1, 1]."""
    latent = keras.Input(shape=(SMALL_LATENT_DIM,), name="noise")
    label = keras.Input(shape=(1,), dtype="int32", name="digit")
    # Spread-out class embeddings, so a few steps leave the classes visibly apart.
    embedding = layers.Embedding(
        CLASSES, 4, embeddings_initializer=keras.initializers.RandomNormal(stddev=2.0)
    )
    embedded = layers.Flatten()(embedding(label))
    x = layers.Concatenate()([latent, embedded])
    x = layers.Dense(8 * 8 * 8, activation="relu")(x)
    x = layers.Reshape((8, 8, 8))(x)
    image = layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh")(x)
    return keras.Model([latent, label], image)


def vae_pair() -> tuple[keras.Model, keras.Model]:
    """A keras-io-style VAE's (encoder, decoder): 16x16x1 images in [0, 1] to (mean, log-variance, z), and back."""
    image = keras.Input(shape=(16, 16, 1), name="image")
    x = layers.Flatten()(image)
    x = layers.Dense(32, activation="relu")(x)
    mean = layers.Dense(SMALL_LATENT_DIM, name="z_mean")(x)
    log_var = layers.Dense(SMALL_LATENT_DIM, name="z_log_var")(x)
    encoder = keras.Model(image, [mean, log_var, mean], name="encoder")
    latent = keras.Input(shape=(SMALL_LATENT_DIM,), name="z")
    y = layers.Dense(16 * 16, activation="sigmoid")(latent)
    decoder = keras.Model(latent, layers.Reshape((16, 16, 1))(y), name="decoder")
    return encoder, decoder


def fit_to_shapes(model: keras.Model, *, sigmoid: bool = False, steps: int = 3, seed: int = 0) -> keras.Model:
    """A few optimizer steps from latents (and classes) towards shape images, scaled to the model's range."""
    size, channels = int(model.outputs[0].shape[1]), int(model.outputs[0].shape[-1])
    images, labels = shapes_images(32 * steps, image_size=max(size, 16), channels=channels, seed=seed)
    images = images[:, :size, :size]
    if sigmoid:
        images = (images + 1.0) / 2.0
    rng = np.random.RandomState(seed)
    latents = rng.randn(len(images), int(model.inputs[0].shape[-1])).astype(np.float32)
    inputs = (
        [latents, (labels % CLASSES).reshape(-1, 1).astype(np.int32)] if len(model.inputs) == 2 else latents
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(
        inputs, images.reshape((len(images), *model.outputs[0].shape[1:])), batch_size=32, epochs=1, verbose=0
    )
    return model


def save_keras(model: keras.Model, folder: Path, name: str) -> Path:
    path = folder / f"{name}.keras"
    model.save(path)
    return path
