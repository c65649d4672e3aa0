"""Spoken digits rendered by espeak-ng, seeded and split by voice; WAV folders; resampling and clip fitting."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.deploy.support import require_tool
from training.audio import data
from training.audio.data import (
    CLIP_SAMPLES,
    DIGITS,
    PEAK_RANGE,
    SAMPLE_RATE,
    english_voices,
    fit_clip,
    load_audio_folder,
    load_spoken_digits,
    render_spoken_digits,
    resample,
    split_speakers,
    voice_variants,
)


@pytest.fixture(scope="module")
def speakers() -> tuple[list[data.Speaker], list[data.Speaker]]:
    require_tool("espeak-ng")
    return split_speakers(english_voices(), voice_variants(), seed=0)


def _write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.repeat(samples[:, None], channels, axis=1)
    encoded = (frames * 127 + 128).astype(np.uint8) if width == 1 else (frames * 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(encoded.tobytes())


def test_held_out_speakers_use_voice_variants_no_training_speaker_uses(
    speakers: tuple[list[data.Speaker], list[data.Speaker]],
) -> None:
    train, held_out = speakers
    train_variants = {speaker.variant for speaker in train}
    held_variants = {speaker.variant for speaker in held_out}

    assert len(english_voices()) >= 5 and len(voice_variants()) >= 50
    assert held_variants and not held_variants & train_variants and None in train_variants
    assert split_speakers(english_voices(), voice_variants(), seed=0) == speakers
    assert split_speakers(english_voices(), voice_variants(), seed=1)[1] != held_out


def test_spoken_digits_are_seeded_one_second_clips_centred_at_their_drawn_loudness(
    speakers: tuple[list[data.Speaker], list[data.Speaker]],
) -> None:
    train, _ = speakers
    clips = render_spoken_digits(20, train, seed=3)

    assert clips.clips.shape == (20, CLIP_SAMPLES) and clips.clips.dtype == np.float32
    assert clips.labels.tolist() == [i % 10 for i in range(20)] and clips.class_names == list(DIGITS)
    peaks = np.abs(clips.clips).max(axis=1)
    assert (peaks >= PEAK_RANGE[0] - 1e-4).all() and (peaks <= PEAK_RANGE[1] + 1e-4).all()
    energy = clips.clips**2
    centre = (energy * np.arange(CLIP_SAMPLES)).sum(axis=1) / energy.sum(axis=1) / CLIP_SAMPLES
    assert ((centre > 0.3) & (centre < 0.7)).all()  # the word sits in the middle of its second
    assert len(set(clips.speakers)) > 10
    again = render_spoken_digits(20, train, seed=3)
    np.testing.assert_array_equal(again.clips, clips.clips)
    assert not np.array_equal(render_spoken_digits(20, train, seed=4).clips, clips.clips)


def test_spoken_digits_are_cached_and_read_back(
    speakers: tuple[list[data.Speaker], list[data.Speaker]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, held_out = load_spoken_digits(count=20, seed=0, cache_dir=tmp_path)
    assert len(train) == 20 and len(held_out) == 10
    assert not set(train.speakers) & set(held_out.speakers)

    def no_rendering(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should answer")

    monkeypatch.setattr(data, "render_spoken_digits", no_rendering)
    cached_train, cached_held_out = load_spoken_digits(count=20, seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached_train.clips, train.clips)
    assert cached_held_out.speakers == held_out.speakers


def test_resampling_keeps_a_tone_at_its_frequency_and_level() -> None:
    seconds = np.arange(22_050) / 22_050
    tone = 0.5 * np.sin(2 * np.pi * 1000 * seconds).astype(np.float32)

    resampled = resample(tone, 22_050, SAMPLE_RATE)

    assert len(resampled) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(resampled))
    assert int(spectrum.argmax()) == 1000  # 1 Hz per bin over one second
    assert np.abs(resampled).max() == pytest.approx(0.5, abs=0.01)


def test_a_clip_is_trimmed_of_silence_and_centred_or_its_middle_kept() -> None:
    burst = np.concatenate([np.zeros(5000), np.ones(2000), np.zeros(100)]).astype(np.float32) * 0.5
    clip = fit_clip(burst, SAMPLE_RATE)
    loud = np.flatnonzero(clip)
    assert len(clip) == CLIP_SAMPLES and len(loud) == 2000 and loud[0] == (CLIP_SAMPLES - 2000) // 2

    ramp = np.linspace(-1, 1, 3 * CLIP_SAMPLES, dtype=np.float32)
    middle = fit_clip(ramp, SAMPLE_RATE)
    np.testing.assert_array_equal(middle, ramp[CLIP_SAMPLES : 2 * CLIP_SAMPLES])


def test_a_wav_folder_gives_one_class_per_subfolder(tmp_path: Path) -> None:
    seconds = np.arange(8000) / 8000
    _write_wav(tmp_path / "low" / "a.wav", 0.5 * np.sin(2 * np.pi * 200 * seconds), 8000)
    _write_wav(tmp_path / "low" / "b.wav", 0.5 * np.sin(2 * np.pi * 250 * seconds), 8000, width=1)
    _write_wav(tmp_path / "high" / "c.wav", 0.5 * np.sin(2 * np.pi * 2000 * seconds), 8000, channels=2)
    soundfile.write(tmp_path / "high" / "d.flac", 0.5 * np.sin(2 * np.pi * 1500 * seconds), 8000)
    (tmp_path / "high" / "notes.txt").write_text("not a sound")

    folder = load_audio_folder(tmp_path)

    assert folder.class_names == ["high", "low"] and folder.labels.tolist() == [0, 0, 1, 1]
    assert folder.clips.shape == (4, CLIP_SAMPLES) and folder.sample_rate == SAMPLE_RATE
    flac = np.abs(np.fft.rfft(folder.clips[1]))
    assert abs(int(flac.argmax()) * SAMPLE_RATE / CLIP_SAMPLES - 1500) <= 2
    high = np.abs(np.fft.rfft(folder.clips[0]))
    assert abs(int(high.argmax()) * SAMPLE_RATE / CLIP_SAMPLES - 2000) <= 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_audio_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        load_audio_folder(tmp_path / "empty")
    (tmp_path / "bad" / "one").mkdir(parents=True)
    (tmp_path / "bad" / "one" / "broken.wav").write_bytes(b"RIFF0000WAVEnonsense")
    with pytest.raises(ValueError, match="broken.wav: not a sound file genserve reads"):
        load_audio_folder(tmp_path / "bad")
