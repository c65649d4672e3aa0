"""Sound as training images: a dataset of clips becomes their spectrogram images, with what turns them back.

``spoken-digits`` and ``audio:PATH`` (`training.audio.data`) load as a `SpectrogramDataset`: an `ImageDataset`
of 128x128 one-channel spectrogram images in [-1, 1] (`training.audio.spectrogram`), so the image GANs' training
loop, weight averaging, checkpoints, time budget and sample checks train on them unchanged. It keeps the
`Normaliser` fitted on the training clips (the same for both splits, so a held-out clip is scaled as a training
one is), the clips themselves and their sample rate: what the export needs to turn a generated spectrogram back
into sound inside the served graph.

Spoken digits are rendered once per clip count and cached (the training seed does not change them: every run on
``spoken-digits`` sees the same clips, and every evaluation hears the same held-out voices). A folder's clips
hold out every tenth file as the test split, as image folders do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.audio.data import (
    AUDIO_PREFIX,
    DEFAULT_CLIPS,
    SPOKEN_DIGITS,
    AudioDataset,
    load_audio_folder,
    load_spoken_digits,
)
from training.audio.spectrogram import BINS, FRAMES, Normaliser
from training.datasets.core import ImageDataset, Split, default_cache_dir, held_out_mask

logger = logging.getLogger(__name__)

# The rendering seed of ``spoken-digits``: the dataset is one fixed set of clips, whatever the run's seed.
SPOKEN_DIGITS_SEED = 0
_IMAGE_BATCH = 256


@dataclass(frozen=True, eq=False)
class SpectrogramDataset(ImageDataset):
    """Spectrogram images of `clips`, with the normaliser that made them and the clips' sample rate."""

    normaliser: Normaliser
    sample_rate: int
    clips: np.ndarray  # float32 [N, samples], the sound of each image

    @property
    def sound_format(self) -> SoundFormat:
        return SoundFormat(self.sample_rate, int(self.clips.shape[1]), self.normaliser)


@dataclass(frozen=True)
class SoundFormat:
    """What turns a run's spectrogram images back into sound: the clips' rate and length, and the normaliser."""

    sample_rate: int
    samples: int
    normaliser: Normaliser

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "samples": self.samples,
            "normaliser": {
                "mean": [float(value) for value in self.normaliser.mean],
                "std": [float(value) for value in self.normaliser.std],
            },
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SoundFormat:
        normaliser = payload["normaliser"]
        return cls(
            int(payload["sample_rate"]),
            int(payload["samples"]),
            Normaliser(np.asarray(normaliser["mean"], np.float32), np.asarray(normaliser["std"], np.float32)),
        )


def load_sound_dataset(
    spec: str,
    *,
    path: Path | None = None,
    limit: int | None = None,
    split: Split = "train",
    cache_dir: Path | None = None,
) -> SpectrogramDataset:
    """The `split` of ``spoken-digits`` (`limit` training clips, default `DEFAULT_CLIPS`, and a fifth as many
    held out) or of an ``audio:PATH`` folder (at most `limit` clips), as spectrogram images."""
    if spec == SPOKEN_DIGITS:
        if path is not None:
            raise ValueError(
                f"{SPOKEN_DIGITS!r} is rendered with espeak-ng, not read from disk: drop the data path"
            )
        train, held_out = load_spoken_digits(
            limit or DEFAULT_CLIPS, SPOKEN_DIGITS_SEED, (cache_dir or default_cache_dir()) / "audio"
        )
    else:
        if path is None:
            raise ValueError(f"dataset {spec!r} needs a folder: write it as {AUDIO_PREFIX}:PATH")
        train, held_out = _split_folder(load_audio_folder(path, name=spec), limit)
    normaliser = Normaliser.fit(train.clips)
    return _images(train if split == "train" else held_out, normaliser, spec)


def spectrogram_images(clips: np.ndarray, normaliser: Normaliser) -> np.ndarray:
    """float32 ``[N, FRAMES, BINS, 1]`` spectrogram images in [-1, 1] of clips float32 ``[N, samples]``."""
    images = np.empty((len(clips), FRAMES, BINS, 1), np.float32)
    for start in range(0, len(clips), _IMAGE_BATCH):
        images[start : start + _IMAGE_BATCH] = normaliser.to_image(
            clips[start : start + _IMAGE_BATCH]
        ).numpy()
    return images


def _images(sound: AudioDataset, normaliser: Normaliser, spec: str) -> SpectrogramDataset:
    logger.info(
        "%s: %d clips of %d samples at %d Hz", spec, len(sound), sound.clips.shape[1], sound.sample_rate
    )
    return SpectrogramDataset(
        spec,
        spectrogram_images(sound.clips, normaliser),
        sound.labels,
        list(sound.class_names),
        normaliser=normaliser,
        sample_rate=sound.sample_rate,
        clips=sound.clips,
    )


def _split_folder(sound: AudioDataset, limit: int | None) -> tuple[AudioDataset, AudioDataset]:
    def part(split: Split) -> AudioDataset:
        keep = np.flatnonzero(held_out_mask(len(sound), split))[:limit]
        return AudioDataset(
            sound.name,
            sound.clips[keep],
            sound.labels[keep],
            sound.class_names,
            sound.sample_rate,
            [sound.speakers[i] for i in keep],
        )

    return part("train"), part("test")
