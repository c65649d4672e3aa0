"""Spectrogram images of clips, normalised into [-1, 1], and Griffin-Lim giving back sound with their spectrum."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.audio.data import CLIP_SAMPLES, SAMPLE_RATE
from training.audio.spectrogram import BINS, FRAMES, Normaliser, griffin_lim, log_magnitudes, smoothed


def _tones(count: int, seed: int = 0) -> np.ndarray:
    """Gliding tones with harmonics and an envelope: speech-like enough for the spectrum to matter."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    clips = []
    for _ in range(count):
        base = rng.uniform(120, 300) * (1 + 0.3 * t)
        phase = 2 * np.pi * np.cumsum(base) / SAMPLE_RATE
        wave = sum(np.sin(k * phase) / k for k in range(1, 6))
        envelope = np.exp(-(((t - 0.5) / 0.2) ** 2))
        clips.append(0.3 * wave * envelope)
    return np.stack(clips).astype(np.float32)


def test_a_clip_becomes_a_128_by_128_image_in_the_unit_range() -> None:
    clips = _tones(8)
    normaliser = Normaliser.fit(clips)

    images = normaliser.to_image(clips).numpy()

    assert images.shape == (8, FRAMES, BINS, 1) and FRAMES == BINS == 128
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert abs(float(images.mean())) < 0.2  # normalised per bin over the clips it was fit on
    assert normaliser.mean.shape == normaliser.std.shape == (BINS,)


def test_griffin_lim_gives_back_sound_with_the_spectrum_asked_for() -> None:
    clips = _tones(4, seed=1)
    normaliser = Normaliser.fit(_tones(16, seed=2))

    waves = griffin_lim(normaliser.magnitudes(normaliser.to_image(clips))).numpy()

    assert waves.shape == (4, CLIP_SAMPLES) and np.abs(waves).max() <= 1.0
    asked = np.exp(log_magnitudes(clips).numpy())
    given = np.exp(log_magnitudes(waves).numpy())
    loud = asked > 0.05 * asked.max()  # where the sound is: the clipped quiet bins do not come back exactly
    convergence = np.linalg.norm((given - asked)[loud]) / np.linalg.norm(asked[loud])
    assert convergence < 0.35
    # The same spectrogram always gives the same sound.
    again = griffin_lim(normaliser.magnitudes(normaliser.to_image(clips))).numpy()
    np.testing.assert_array_equal(again, waves)


def test_griffin_lim_runs_inside_a_traced_graph() -> None:
    normaliser = Normaliser.fit(_tones(4))
    to_sound = tf.function(
        lambda images: griffin_lim(normaliser.magnitudes(images), iterations=4),
        input_signature=[tf.TensorSpec([None, FRAMES, BINS, 1], tf.float32)],
    )

    waves = to_sound(tf.zeros([2, FRAMES, BINS, 1])).numpy()

    assert waves.shape == (2, CLIP_SAMPLES) and np.isfinite(waves).all()


def test_smoothing_removes_a_checkerboard_and_keeps_what_varies_slowly() -> None:
    frames, bins = np.meshgrid(np.arange(FRAMES), np.arange(BINS), indexing="ij")
    checkerboard = np.where((frames + bins) % 2 == 0, 0.5, -0.5).astype(np.float32)
    ramp = (frames / FRAMES - 0.5).astype(np.float32)
    images = np.stack([checkerboard, ramp, np.full_like(ramp, 0.3)])[..., None]

    out = smoothed(images).numpy()

    assert out.shape == images.shape
    assert np.abs(out[0, 1:-1, 1:-1]).max() < 1e-6  # the checkerboard is gone inside the edges
    np.testing.assert_allclose(out[1, 1:-1], images[1, 1:-1], atol=1e-6)  # a linear ramp passes unchanged
    np.testing.assert_allclose(out[2], images[2], atol=1e-6)  # and so does a constant, edges included
