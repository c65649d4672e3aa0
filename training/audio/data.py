"""Clips of sound as training data: spoken digits rendered with espeak-ng, or a folder of WAV files.

``spoken-digits`` says the ten English digit words with Debian's ``espeak-ng`` (no download): every clip draws a
speaker (one of espeak-ng's English voices with one of its voice variants), a pitch, a speed and a loudness
(its peak) from the seed, so the same seed renders the same clips. Speakers are split before any clip is drawn: the
held-out clips come from voice variants that no training clip uses, so evaluation hears voices the model
never did. ``audio:PATH`` reads ``PATH/<class>/*.wav`` (or ``.flac``, ``.ogg``), one class per subfolder.

Every clip is mono float32 in [-1, 1] at `SAMPLE_RATE`, its silence trimmed (frames quieter than 2% of the
clip's peak at either end) and centred in `CLIP_SAMPLES` (padded with silence, or its middle kept when longer).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

# The dataset specs of sound: espeak-ng's spoken digits, and a folder of WAV files (``audio:PATH``).
SPOKEN_DIGITS = "spoken-digits"
AUDIO_PREFIX = "audio"
# The files `audio:PATH` reads.
SOUND_SUFFIXES = (".wav", ".flac", ".ogg")
SAMPLE_RATE = 16_000
# 16,384 samples (1.024 s): 128 spectrogram frames of 128 samples each (`training.audio.spectrogram`).
CLIP_SAMPLES = 16_384
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Spoken-digit clips drawn when no count is given: about 300 per digit.
DEFAULT_CLIPS = 3_000
# Share of the voice variants whose clips are held out.
HELD_OUT_VARIANTS = 0.2
PITCH_RANGE = (25, 75)  # espeak-ng -p, 0-99
SPEED_RANGE = (120, 200)  # words per minute
# espeak-ng -a: half its default, so that no voice clips; each clip is then scaled to a peak in PEAK_RANGE.
RENDER_AMPLITUDE = 50
PEAK_RANGE = (0.2, 0.9)
_QUIET_SHARE = 0.02  # of the clip's peak: below it, a 10 ms frame counts as silence
_FRAME_SECONDS = 0.01
_CACHE_VERSION = 1


def is_sound_spec(spec: str) -> bool:
    """Whether a dataset spec names sound (``spoken-digits`` or ``audio:PATH``) rather than images."""
    return spec == SPOKEN_DIGITS or spec.partition(":")[0] == AUDIO_PREFIX


@dataclass(frozen=True, eq=False)
class AudioDataset:
    """Clips float32 ``[N, samples]`` in [-1, 1] at `sample_rate`, their classes, and who said each."""

    name: str
    clips: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sample_rate: int
    speakers: list[str]

    def __post_init__(self) -> None:
        if self.clips.ndim != 2 or self.clips.dtype != np.float32:
            raise ValueError(f"clips must be float32 [N, samples], got {self.clips.dtype} {self.clips.shape}")
        if self.labels.shape != (len(self.clips),) or len(self.speakers) != len(self.clips):
            raise ValueError("every clip needs one label and one speaker")

    def __len__(self) -> int:
        return int(self.clips.shape[0])


@dataclass(frozen=True)
class Speaker:
    """An espeak-ng voice (its file, e.g. ``gmw/en-US``) with a voice variant (e.g. ``Alex``), or none."""

    voice: str
    variant: str | None

    @property
    def option(self) -> str:
        return self.voice if self.variant is None else f"{self.voice}+{self.variant}"


def espeak() -> str:
    """The espeak-ng command, or an error saying how to get it."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise FileNotFoundError(
            "spoken-digits renders its clips with espeak-ng, which is not installed: apt-get install espeak-ng"
        )
    return found


def english_voices() -> list[str]:
    """espeak-ng's own English voices (by file): not the MBROLA ones, which need MBROLA installed, nor the
    variants listed among them."""
    listing = subprocess.run([espeak(), "--voices=en"], capture_output=True, text=True, check=True).stdout
    files = (line.split()[4] for line in listing.splitlines()[1:] if len(line.split()) >= 5)
    return sorted({file for file in files if not file.startswith(("mb/", "!v/"))})


def voice_variants() -> list[str]:
    """espeak-ng's voice variants (``!v/NAME`` files): timbre, formants and breathiness of a voice."""
    listing = subprocess.run(
        [espeak(), "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    files = (line.split()[4] for line in listing.splitlines()[1:] if len(line.split()) >= 5)
    return sorted({file.removeprefix("!v/") for file in files if file.startswith("!v/")})


def split_speakers(
    voices: Sequence[str], variants: Sequence[str], seed: int
) -> tuple[list[Speaker], list[Speaker]]:
    """Training and held-out speakers: every voice with the training variants (and with none), and every voice
    with the held-out variants, a `HELD_OUT_VARIANTS` share of them drawn by the seed."""
    shuffled = sorted(variants)
    random.Random(seed).shuffle(shuffled)
    held = max(1, round(len(shuffled) * HELD_OUT_VARIANTS))
    held_out, kept = sorted(shuffled[:held]), sorted(shuffled[held:])
    train = [Speaker(voice, variant) for voice in voices for variant in [None, *kept]]
    return train, [Speaker(voice, variant) for voice in voices for variant in held_out]


def render_spoken_digits(
    count: int, speakers: Sequence[Speaker], seed: int, *, name: str = "spoken-digits", workers: int = 4
) -> AudioDataset:
    """`count` clips, digit i mod 10 for clip i, each said by a speaker, pitch, speed and loudness the seed
    draws; rendered by espeak-ng, `workers` at a time."""
    if count < 1 or not speakers:
        raise ValueError("rendering needs at least one clip and one speaker")
    rng = random.Random(seed)
    plans = [
        (
            DIGITS[i % len(DIGITS)],
            rng.choice(speakers),
            rng.randint(*PITCH_RANGE),
            rng.randint(*SPEED_RANGE),
            rng.uniform(*PEAK_RANGE),
        )
        for i in range(count)
    ]
    command = espeak()
    with (
        tempfile.TemporaryDirectory(prefix="genserve-espeak-") as folder,
        ThreadPoolExecutor(workers) as pool,
    ):

        def render(index: int) -> np.ndarray:
            word, speaker, pitch, speed, level = plans[index]
            path = Path(folder) / f"{index}.wav"
            options = ["-v", speaker.option, "-p", str(pitch), "-s", str(speed), "-a", str(RENDER_AMPLITUDE)]
            subprocess.run([command, *options, "-w", str(path), word], check=True, capture_output=True)
            samples, rate = read_audio(path)
            clip = fit_clip(resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE)
            peak = float(np.abs(clip).max())
            return clip * np.float32(level / peak) if peak > 0 else clip

        clips = np.stack(list(pool.map(render, range(count))))
    labels = np.array([i % len(DIGITS) for i in range(count)], dtype=np.int32)
    return AudioDataset(name, clips, labels, list(DIGITS), SAMPLE_RATE, [plan[1].option for plan in plans])


def load_spoken_digits(
    count: int = DEFAULT_CLIPS, seed: int = 0, cache_dir: Path | None = None
) -> tuple[AudioDataset, AudioDataset]:
    """Training and held-out spoken digits (held-out: a fifth as many clips, by held-out voice variants),
    kept in `cache_dir` as .npz so a second run reads them instead of rendering them again."""
    voices, variants = english_voices(), voice_variants()
    key = {"count": count, "seed": seed, "voices": voices, "variants": variants, "version": _CACHE_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cached = None if cache_dir is None else Path(cache_dir) / f"spoken-digits-{digest}.npz"
    if cached is not None and cached.is_file():
        return _read_cache(cached)
    train_speakers, held_out_speakers = split_speakers(voices, variants, seed)
    train = render_spoken_digits(count, train_speakers, seed)
    held_out = render_spoken_digits(max(len(DIGITS), count // 5), held_out_speakers, seed + 1)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        _write_cache(cached, train, held_out)
    return train, held_out


def load_audio_folder(path: Path, name: str | None = None) -> AudioDataset:
    """``PATH/<class>/*.wav``: every WAV, FLAC or Ogg file, its class its subfolder's name (classes sorted by
    name)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {str(root)!r} does not exist")
    classes = sorted(child.name for child in root.iterdir() if child.is_dir())
    files = [(label, sound) for label, cls in enumerate(classes) for sound in _sound_files(root / cls)]
    if len(classes) < 1 or not files:
        raise ValueError(
            f"{str(root)!r} holds no class subfolders of sound files: use PATH/<class>/*.wav (or .flac, .ogg)"
        )
    clips, labels, speakers = [], [], []
    for label, wav in files:
        samples, rate = read_audio(wav)
        clips.append(fit_clip(resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE))
        labels.append(label)
        speakers.append(wav.name)
    return AudioDataset(
        name or f"audio:{root.name}",
        np.stack(clips),
        np.array(labels, np.int32),
        classes,
        SAMPLE_RATE,
        speakers,
    )


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """A sound file's samples (WAV, FLAC or Ogg, read by libsndfile) as float32 in [-1, 1], channels averaged,
    and its sample rate; a ValueError naming the file when it is not sound libsndfile reads."""
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise ValueError(f"{path}: not a sound file genserve reads (WAV, FLAC or Ogg): {error}") from error
    return samples.mean(axis=1), int(rate)


def _sound_files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.iterdir() if path.suffix.lower() in SOUND_SUFFIXES and path.is_file()
    )


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`samples` at `target` Hz: their spectrum kept up to the lower Nyquist frequency (FFT resampling)."""
    if rate == target or len(samples) == 0:
        return samples.astype(np.float32)
    length = max(1, round(len(samples) * target / rate))
    spectrum = np.fft.rfft(samples)
    bins = length // 2 + 1
    kept = np.zeros(bins, dtype=spectrum.dtype)
    shared = min(bins, len(spectrum))
    kept[:shared] = spectrum[:shared]
    return (np.fft.irfft(kept, n=length) * (length / len(samples))).astype(np.float32)


def fit_clip(samples: np.ndarray, rate: int, size: int = CLIP_SAMPLES) -> np.ndarray:
    """Silence trimmed at both ends, then centred in `size` samples (padded, or its middle kept), in [-1, 1]."""
    frame = max(1, round(rate * _FRAME_SECONDS))
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    if peak > 0:
        padded = np.zeros(-(-len(samples) // frame) * frame, np.float32)
        padded[: len(samples)] = np.abs(samples)
        loud = np.flatnonzero(padded.reshape(-1, frame).max(axis=1) >= _QUIET_SHARE * peak)
        if len(loud):
            samples = samples[loud[0] * frame : (loud[-1] + 1) * frame]
    clip = np.zeros(size, np.float32)
    if len(samples) >= size:
        start = (len(samples) - size) // 2
        clip[:] = samples[start : start + size]
    else:
        start = (size - len(samples)) // 2
        clip[start : start + len(samples)] = samples
    return np.clip(clip, -1.0, 1.0)


def _write_cache(path: Path, train: AudioDataset, held_out: AudioDataset) -> None:
    partial = path.with_suffix(".partial.npz")
    arrays: dict[str, np.ndarray] = {}
    for part, data in (("train", train), ("held_out", held_out)):
        arrays |= {
            f"{part}_clips": data.clips,
            f"{part}_labels": data.labels,
            f"{part}_speakers": np.array(data.speakers),
        }
    np.savez(partial, **arrays)  # type: ignore[arg-type]
    partial.replace(path)


def _read_cache(path: Path) -> tuple[AudioDataset, AudioDataset]:
    with np.load(path) as saved:
        return tuple(  # type: ignore[return-value]
            AudioDataset(
                "spoken-digits",
                saved[f"{part}_clips"],
                saved[f"{part}_labels"],
                list(DIGITS),
                SAMPLE_RATE,
                [str(speaker) for speaker in saved[f"{part}_speakers"]],
            )
            for part in ("train", "held_out")
        )
