"""Views of a sound generator's clips, rendered by the one `Renderer`: a `POST /generate` answer (`ClipsView`) and
an interpolation's clips (`ClipFramesView`), as one WAV or FLAC of the clips in a row, a zip of one WAV per clip,
the raw float32 array (npy) or, for `POST /generate`, JSON. Every WAV carries a provenance record
(`app/latent/provenance.py`): the answer's for a WAV of all the clips, each clip's own (its seed and class) for a
WAV of one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.api.headers import seeds_header
from app.api.schemas import GenerateAudioJSONResponse, Provenance
from app.audio import formats
from app.latent import provenance
from app.latent.formats import archive_bytes, npy_bytes
from app.latent.generation import Frames, Generated
from app.latent.rendering import JSON, Body, RenderOptions
from app.serving.registry import ModelVersion

# What a class name may bring into a file name; anything else becomes "_".
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ClipsView:
    """Clips from `POST /generate`: one WAV in a row (with silence between), a zip, npy or JSON."""

    result: Generated
    include_latents: bool = False

    @property
    def model_version(self) -> ModelVersion:
        return self.result.model_version

    @property
    def pixels(self) -> int:
        """Samples to encode: what rendering costs, as the renderer weighs it."""
        return int(self.result.outputs.size)

    def headers(self) -> dict[str, str]:
        return seeds_header(self.result.seeds)

    def body(self, format: str, options: RenderOptions) -> Body:
        result = self.result
        record = provenance.of_generated(result) if options.metadata else None
        classes = provenance.class_names(result.model_version, result.labels)
        clip_records = _clip_records(record, len(result.outputs), result.seeds, classes)
        if format == JSON:
            return self._json(record, clip_records)
        names = [f"{stem}.wav" for stem in self._stems()]
        sample_rate = _sample_rate(result.model_version)
        return _clip_file(format, result.outputs, names, sample_rate, record, clip_records)

    def _stems(self) -> list[str]:
        result = self.result
        if result.seeds is not None:
            stems = [f"seed{seed:010d}" for seed in result.seeds]
        else:
            stems = [f"latent{index:04d}" for index in range(len(result.outputs))]
        classes = provenance.class_names(result.model_version, result.labels)
        if classes is None:
            return stems
        return [
            f"{stem}-{_UNSAFE_IN_NAMES.sub('_', name)}" for stem, name in zip(stems, classes, strict=True)
        ]

    def _json(self, record: Provenance | None, clip_records: list[Provenance | None]) -> dict[str, Any]:
        result = self.result
        sample_rate = _sample_rate(result.model_version)
        count = len(result.outputs)
        names = provenance.class_names(result.model_version, result.labels)
        classes: list[str | None] = list(names) if names is not None else [None] * count
        seeds: list[int | None] = list(result.seeds) if result.seeds is not None else [None] * count
        clips = [
            {
                "seed": seed,
                "label": label,
                "wav_base64": formats.wav_base64(clip, sample_rate, clip_record),
                "sample_rate": sample_rate,
                "latent": result.latents[index].tolist() if self.include_latents else None,
            }
            for index, (seed, label, clip, clip_record) in enumerate(
                zip(seeds, classes, result.outputs, clip_records, strict=True)
            )
        ]
        response = GenerateAudioJSONResponse.model_validate(
            {
                "model": result.model_version.name,
                "version": result.model_version.version,
                "sample_rate": sample_rate,
                "samples": result.outputs.shape[1],
                "clips": clips,
                "provenance": record,
            }
        )
        return response.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class ClipFramesView:
    """An interpolation's clips, in the order of the path: one WAV in a row, a zip or npy."""

    frames: Frames

    @property
    def model_version(self) -> ModelVersion:
        return self.frames.model_version

    @property
    def pixels(self) -> int:
        """Samples to encode: what rendering costs, as the renderer weighs it."""
        return int(self.frames.outputs.size)

    def headers(self) -> dict[str, str]:
        return {}

    def body(self, format: str, options: RenderOptions) -> Body:
        frames = self.frames
        record = provenance.of_frames(frames) if options.metadata else None
        names = [f"frame{index:04d}.wav" for index in range(len(frames.outputs))]
        clip_records: list[Provenance | None] = [record] * len(names)
        sample_rate = _sample_rate(frames.model_version)
        return _clip_file(format, frames.outputs, names, sample_rate, record, clip_records)


def _clip_file(
    format: str,
    clips: np.ndarray,
    names: list[str],
    sample_rate: int,
    record: Provenance | None,
    clip_records: list[Provenance | None],
) -> bytes:
    """Clips as one file: the raw float32 array (npy, which keeps no metadata), one WAV each in a zip (with the
    manifest images' zips have), or else one FLAC or WAV of them all in a row."""
    if format == "npy":
        return npy_bytes(clips.astype(np.float32, copy=False))
    if format == "zip":
        files = [
            (name, formats.wav_bytes(clip, sample_rate, clip_record))
            for name, clip, clip_record in zip(names, clips, clip_records, strict=True)
        ]
        return archive_bytes(files, record)
    encode = formats.flac_bytes if format == "flac" else formats.wav_bytes
    return encode(formats.in_a_row(clips, sample_rate), sample_rate, record)


def _clip_records(
    record: Provenance | None, count: int, seeds: list[int] | None, classes: list[str] | None
) -> list[Provenance | None]:
    """Each of `count` clips' own record: the answer's, narrowed to the clip's seed and class."""
    if record is None:
        return [None] * count
    updates = [
        {
            "seeds": None if seeds is None else [seeds[index]],
            "labels": None if classes is None else [classes[index]],
        }
        for index in range(count)
    ]
    return [record.model_copy(update=update) for update in updates]


def _sample_rate(model_version: ModelVersion) -> int:
    audio = model_version.metadata.audio
    if audio is None:  # a sound generator's servable is only loaded with its AudioInfo
        raise ValueError(f"{model_version.name!r} is not a sound generator")
    return audio.sample_rate
