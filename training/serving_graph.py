"""The graph a published image generator serves: latents (scaled, and through the flow prior of a VAE that has
one) to uint8 pixels, with the signatures the store contract names."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from genserve.conventions import PIXEL_MAX, pixels_to_unit, unit_to_pixel_values
from genserve.signatures import image_signature_of
from genserve.store import (
    ENCODE_SIGNATURE,
    FROM_EMBEDDING_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_OUTPUT,
    LABEL_EMBEDDING_INPUT,
    LABEL_EMBEDDINGS_OUTPUT,
    LABEL_EMBEDDINGS_SIGNATURE,
    LATENT_LOG_VAR_OUTPUT,
    LATENT_MEAN_OUTPUT,
    SIGNATURE_NAME,
)
from training.cdcgan import (
    LABEL_EMBEDDING_DIM,
    class_from_latent,
    embedding_generator,
    label_embedding_table,
)
from training.prior import LatentFlow
from training.signatures import tf_spec

# The attribute of `GeneratorServer`, and so of the loaded SavedModel, holding `ModelMetadata.latent_scale` as a
# variable (what its signatures multiply latents by).
LATENT_SCALE_VARIABLE = "latent_scale"


class GeneratorServer(tf.Module):
    """Holds a generator and the graphs that turn its [-1, 1] output into uint8 pixels.

    A conditional generator also gets `from_embedding` (latents plus a point in the label embedding
    space, so classes can be blended) and `label_embeddings` (the table of every class's point). A VAE's
    encoder becomes `encode` (uint8 images to the posterior's mean and log-variance); with a `prior`, the
    latents served and encoded are the flow's base points. With `classes_from_latent` (the number of classes
    of a conditional generator served unconditionally) the only signature takes latents and picks each
    image's class from them, each class as often as its `class_weights` says (equally often without them);
    `blend_classes` False leaves out the embedding signatures of a conditional generator
    that is not genserve's own (`training.importer`). Every signature multiplies the generator's latents by the `latent_scale`
    variable (after a class is drawn from them), so the served latents stay N(0, I).
    """

    def __init__(
        self,
        generator: keras.Model | tf.Module,
        latent_dim: int,
        conditional: bool = False,
        encoder: keras.Model | tf.Module | None = None,
        prior: LatentFlow | None = None,
        classes_from_latent: int = 0,
        latent_scale: float = 1.0,
        blend_classes: bool = True,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(name="generator_server")
        self.generator = generator
        self.latent_scale = tf.Variable(latent_scale, trainable=False, dtype=tf.float32)
        self.prior = prior
        self.classes_from_latent = classes_from_latent
        self._class_weights = None if class_weights is None else [float(w) for w in class_weights]
        # The store's image signature; the output's shape is the generator's own.
        inputs = [
            tf_spec(spec) for spec in image_signature_of(latent_dim, (), conditional=conditional).inputs
        ]
        latent_spec = inputs[0]
        # Built whole, then assigned once: tf.Module tracks attribute dicts and refuses ones changed later.
        extra: dict[str, tf.types.experimental.PolymorphicFunction] = {}
        if encoder is not None:
            self.encoder = encoder
            image_spec = tf.TensorSpec([None, *_encoded_image_shape(encoder)], tf.uint8, name=IMAGES_INPUT)
            extra[ENCODE_SIGNATURE] = tf.function(self._encode, input_signature=[image_spec])
        if conditional:
            self.serve = tf.function(self._generate_class, input_signature=inputs)
            if blend_classes:
                self.from_embedding_generator = embedding_generator(generator)
                embedding_spec = tf.TensorSpec(
                    [None, LABEL_EMBEDDING_DIM], tf.float32, name=LABEL_EMBEDDING_INPUT
                )
                extra[FROM_EMBEDDING_SIGNATURE] = tf.function(
                    self._generate_from_embedding, input_signature=[latent_spec, embedding_spec]
                )
                extra[LABEL_EMBEDDINGS_SIGNATURE] = tf.function(self._label_embeddings, input_signature=[])
        elif classes_from_latent:
            self.serve = tf.function(self._generate_drawn_class, input_signature=[latent_spec])
        else:
            self.serve = tf.function(self._generate, input_signature=[latent_spec])
        self.extra_signatures = extra

    def _outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The signatures' outputs for the generator's [-1, 1] images: uint8 pixels."""
        return _to_pixels(images)

    def _scaled(self, z: tf.Tensor) -> tf.Tensor:
        return z * self.latent_scale

    def _generate(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        latents = self.prior.forward(z) if self.prior is not None else self._scaled(z)
        return self._outputs(self.generator(latents, training=False))

    def _generate_class(self, z: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(self.generator([self._scaled(z), label], training=False))

    def _generate_drawn_class(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        latents, label = class_from_latent(z, self.classes_from_latent, self._class_weights)
        return self._outputs(self.generator([self._scaled(latents), label], training=False))

    def _generate_from_embedding(self, z: tf.Tensor, label_embedding: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(
            self.from_embedding_generator([self._scaled(z), label_embedding], training=False)
        )

    def _encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        scaled = pixels_to_unit(tf.cast(images, tf.float32))
        z_mean, z_log_var = self.encoder(scaled, training=False)
        if self.prior is not None:
            z_mean, z_log_var = self.prior.posterior_in_base(z_mean, z_log_var)
        return {
            LATENT_MEAN_OUTPUT: tf.cast(z_mean, tf.float32),
            LATENT_LOG_VAR_OUTPUT: tf.cast(z_log_var, tf.float32),
        }

    def _label_embeddings(self) -> dict[str, tf.Tensor]:
        return {LABEL_EMBEDDINGS_OUTPUT: label_embedding_table(self.generator)}

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Every signature to save, by name."""
        functions = {SIGNATURE_NAME: self.serve, **self.extra_signatures}
        return {name: function.get_concrete_function() for name, function in functions.items()}


def _encoded_image_shape(encoder: keras.Model | tf.Module) -> tuple[int, ...]:
    """(H, W, C) of the images an encoder takes: a Keras model's input, or an adapter's `image_shape`."""
    shape = getattr(encoder, "image_shape", None)
    return tuple(shape) if shape is not None else tuple(encoder.inputs[0].shape[1:])


def _to_pixels(images: tf.Tensor) -> dict[str, tf.Tensor]:
    pixels = tf.clip_by_value(tf.round(unit_to_pixel_values(images)), 0.0, float(PIXEL_MAX))
    return {IMAGES_OUTPUT: tf.cast(pixels, tf.uint8)}


def float32_copy(generator: keras.Model) -> keras.Model:
    """`generator` itself if it computes in float32, else a float32 twin with the same weights.

    Serving hardware may lack fast bfloat16, and float32 keeps the served pixels equal to the float32 math.
    """
    if all(layer.dtype_policy.name == "float32" for layer in generator.layers):
        return generator

    def to_float32(layer: keras.layers.Layer) -> keras.layers.Layer:
        return type(layer).from_config({**layer.get_config(), "dtype": "float32"})

    twin = keras.models.clone_model(generator, clone_function=to_float32)
    twin.set_weights(generator.get_weights())
    return twin
