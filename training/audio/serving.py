"""The graph a published sound generator serves: latents (and a class) to a spectrogram, then to sound.

`SoundServer` is the image generators' `GeneratorServer` with another ending: the generator's [-1, 1] image is
a normalised log-magnitude spectrogram, which the graph smooths (its transposed convolutions' checkerboard
removed), scales back to magnitudes and turns into a waveform with Griffin-Lim (`training.audio.spectrogram`), so TensorFlow Serving and the inference protocols answer sound too:
``serving_default(z, label) -> {"audio": float32 [None, samples]}`` in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from genserve.store import AUDIO_OUTPUT
from training.audio.spectrogram import griffin_lim, smoothed
from training.datasets.sounds import SoundFormat
from training.serving_graph import GeneratorServer


class SoundServer(GeneratorServer):
    """A `GeneratorServer` whose signatures answer waveforms of `sound`'s rate and length."""

    def __init__(self, *args: Any, sound: SoundFormat, **kwargs: Any) -> None:
        self._sound = sound
        super().__init__(*args, **kwargs)

    def _outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        waves = griffin_lim(self._sound.normaliser.magnitudes(smoothed(images)))
        return {AUDIO_OUTPUT: waves[:, : self._sound.samples]}
