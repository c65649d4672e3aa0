"""Hand-built sound generators for the serving tests: tones whose pitch comes from the class and whose loudness and
phase come from the latent; `ToneModels` calls their SavedModels directly, for what the service must answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from genserve import store
from genserve.conventions import latents_from_seeds
from genserve.store import AudioInfo, ModelMetadata
from tests.training.savedmodels import LATENT_DIM, module_metadata, publish_module

SAMPLE_RATE = 16000
SAMPLES = 16384
SPECTROGRAM_SHAPE = (128, 128)
CLASSES = ["low", "mid", "high"]
# The conditional tone's model and the unconditional one's.
TONE = "tone"
HUM = "hum"
_BASE_HZ = 220.0


class ToneModels:
    """The published tones' own `serving_default`, called as TensorFlow Serving would."""

    def __init__(self, model_store: Path) -> None:
        self._signatures = {
            name: tf.saved_model.load(str(model_store / name / "1")).signatures[store.SIGNATURE_NAME]
            for name in (TONE, HUM)
        }

    def clips(self, name: str, latents: np.ndarray, labels: list[int] | None = None) -> np.ndarray:
        inputs = {store.LATENT_INPUT: tf.constant(latents, tf.float32)}
        if labels is not None:
            inputs[store.LABEL_INPUT] = tf.constant(labels, tf.int32)
        return np.asarray(self._signatures[name](**inputs)[store.AUDIO_OUTPUT])

    def from_seeds(self, name: str, seeds: list[int], labels: list[int] | None = None) -> np.ndarray:
        """The clips of `seeds`, each seed's latent drawn as the service draws it."""
        return self.clips(name, latents_from_seeds(seeds, LATENT_DIM), labels)


class _Tone(tf.Module):
    """The tone as a SavedModel: `z` (and `label`) in, float32 `audio` [B, SAMPLES] out; class k sounds at
    220·(k+1) Hz, the latent's first value sets the loudness (0.2 to 0.9), its second the phase."""

    def __init__(self, conditional: bool) -> None:
        super().__init__()
        self.steps = tf.constant(np.arange(SAMPLES, dtype=np.float32) / SAMPLE_RATE)
        latent = tf.TensorSpec([None, LATENT_DIM], tf.float32, name=store.LATENT_INPUT)
        if conditional:
            label = tf.TensorSpec([None], tf.int32, name=store.LABEL_INPUT)
            self.generate = tf.function(self._conditional, input_signature=[latent, label])
        else:
            self.generate = tf.function(self._unconditional, input_signature=[latent])

    def _conditional(self, z: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
        return {store.AUDIO_OUTPUT: self._clips(z, tf.cast(label, tf.float32))}

    def _unconditional(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        return {store.AUDIO_OUTPUT: self._clips(z, tf.zeros_like(z[:, 0]))}

    def _clips(self, z: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
        pitch = (_BASE_HZ * (classes + 1.0))[:, None]
        loudness = 0.2 + 0.7 * tf.sigmoid(z[:, :1])
        return loudness * tf.sin(2 * np.pi * pitch * self.steps[None, :] + z[:, 1:2])


def audio_metadata(name: str, *, conditional: bool) -> ModelMetadata:
    return module_metadata(
        name,
        "specgan",
        image_shape=(0, 0, 0),
        channels=0,
        class_names=CLASSES if conditional else None,
        audio=AudioInfo(sample_rate=SAMPLE_RATE, samples=SAMPLES, spectrogram_shape=SPECTROGRAM_SHAPE),
    )


def publish_tones(model_store: Path) -> Path:
    """The conditional tone (`TONE`) and the unconditional one (`HUM`), version 1 each, in `model_store`."""
    for name, conditional in ((TONE, True), (HUM, False)):
        publish_module(model_store, _Tone(conditional), audio_metadata(name, conditional=conditional))
    return model_store
