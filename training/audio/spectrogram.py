"""Clips as images and back: log-magnitude spectrograms normalised per frequency, and Griffin-Lim in the graph.

A clip of `CLIP_SAMPLES` samples becomes 128 frames x 128 frequency bins (a 256-sample Hann window every 128
samples; the Nyquist bin dropped), the logarithm of their magnitudes, normalised per bin by the training
clips' mean and spread, clipped at three spreads and scaled into [-1, 1]: an image a DCGAN can learn (SpecGAN,
Donahue, McAuley and Puckette, "Adversarial Audio Synthesis", 2019). Sound comes back by undoing the scaling
and estimating the phases the spectrogram lacks with Griffin-Lim: alternate between the magnitudes asked for
and the phases of the signal they last gave. Everything here is TensorFlow ops, so the exported graph can
answer waveforms itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from training.audio.data import CLIP_SAMPLES

FRAME_LENGTH = 256
FRAME_STEP = 128
FRAMES = CLIP_SAMPLES // FRAME_STEP  # 128
BINS = FRAME_LENGTH // 2  # 128: the Nyquist bin is dropped
CLIP_SPREADS = 3.0
GRIFFIN_LIM_ITERATIONS = 32
_FLOOR = 1e-6  # added to magnitudes before their logarithm


def _stft(clips: tf.Tensor) -> tf.Tensor:
    return tf.signal.stft(
        clips,
        FRAME_LENGTH,
        FRAME_STEP,
        fft_length=FRAME_LENGTH,
        window_fn=tf.signal.hann_window,
        pad_end=True,
    )


def _istft(spectrum: tf.Tensor) -> tf.Tensor:
    window = tf.signal.inverse_stft_window_fn(FRAME_STEP, forward_window_fn=tf.signal.hann_window)
    waves = tf.signal.inverse_stft(
        spectrum, FRAME_LENGTH, FRAME_STEP, fft_length=FRAME_LENGTH, window_fn=window
    )
    return waves[:, :CLIP_SAMPLES]


def log_magnitudes(clips: tf.Tensor) -> tf.Tensor:
    """float32 ``[N, CLIP_SAMPLES]`` -> ``[N, FRAMES, BINS]``: log |STFT|, without the Nyquist bin."""
    magnitudes = tf.abs(_stft(tf.convert_to_tensor(clips, tf.float32)))[:, :FRAMES, :BINS]
    return tf.math.log(magnitudes + _FLOOR)


@dataclass(frozen=True)
class Normaliser:
    """Per-bin mean and spread of the training clips' log magnitudes: spectrograms to [-1, 1] and back."""

    mean: np.ndarray  # float32 [BINS]
    std: np.ndarray  # float32 [BINS]

    @classmethod
    def fit(cls, clips: np.ndarray, batch: int = 256) -> Normaliser:
        """The mean and spread of every bin over every frame of `clips`."""
        total = np.zeros(BINS, np.float64)
        squares = np.zeros(BINS, np.float64)
        count = 0
        for start in range(0, len(clips), batch):
            logs = log_magnitudes(clips[start : start + batch]).numpy().reshape(-1, BINS).astype(np.float64)
            total += logs.sum(axis=0)
            squares += (logs**2).sum(axis=0)
            count += len(logs)
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def to_image(self, clips: tf.Tensor) -> tf.Tensor:
        """Clips -> spectrogram images ``[N, FRAMES, BINS, 1]`` in [-1, 1]."""
        scaled = (log_magnitudes(clips) - self.mean) / (CLIP_SPREADS * self.std)
        return tf.clip_by_value(scaled, -1.0, 1.0)[..., None]

    def magnitudes(self, images: tf.Tensor) -> tf.Tensor:
        """Spectrogram images ``[N, FRAMES, BINS, 1]`` -> magnitudes ``[N, FRAMES, BINS + 1]`` (Nyquist bin 0)."""
        logs = tf.cast(images[..., 0], tf.float32) * (CLIP_SPREADS * self.std) + self.mean
        magnitudes = tf.maximum(tf.exp(logs) - _FLOOR, 0.0)
        return tf.pad(magnitudes, [[0, 0], [0, 0], [0, 1]])


def smoothed(images: tf.Tensor) -> tf.Tensor:
    """Spectrogram images ``[N, FRAMES, BINS, 1]`` through a 3-tap binomial filter (1/4, 1/2, 1/4) along time and
    then along frequency, edges repeated.

    A generator's stride-2 transposed convolutions leave a checkerboard of alternating frames and bins that no
    sound has; Griffin-Lim turns it into a hiss. Filtering the drawn picture before inversion removes it (what
    that changed in how generated clips score: docs/audio.md).
    """
    x = tf.convert_to_tensor(images, tf.float32)
    for axis in (1, 2):
        padding = [[0, 0]] * 4
        padding[axis] = [1, 1]
        padded = tf.pad(x, padding, mode="SYMMETRIC")
        size = tf.shape(x)[axis]
        shifted = [tf.gather(padded, tf.range(offset, offset + size), axis=axis) for offset in range(3)]
        x = 0.25 * shifted[0] + 0.5 * shifted[1] + 0.25 * shifted[2]
    return x


def griffin_lim(magnitudes: tf.Tensor, iterations: int = GRIFFIN_LIM_ITERATIONS) -> tf.Tensor:
    """Magnitudes ``[N, FRAMES, BINS + 1]`` -> waveforms ``[N, CLIP_SAMPLES]`` in [-1, 1].

    Starts from zero phases (so the same spectrogram always gives the same sound) and runs `iterations`
    rounds inside one graph loop; the result is scaled down where it would pass full scale.
    """
    magnitudes = tf.cast(magnitudes, tf.complex64)
    waves = _istft(magnitudes)

    def refine(i: tf.Tensor, waves: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        spectrum = _stft(waves)[:, :FRAMES]
        phases = spectrum / tf.cast(tf.maximum(tf.abs(spectrum), 1e-8), tf.complex64)
        return i + 1, _istft(magnitudes * phases)

    _, waves = tf.while_loop(lambda i, _: i < iterations, refine, [tf.constant(0), waves])
    peak = tf.reduce_max(tf.abs(waves), axis=1, keepdims=True)
    return waves / tf.maximum(peak, 1.0)
