"""Clips as file bytes: 16-bit PCM mono WAV or FLAC, one clip or several in a row with silence between
(blocking: off-loop). Given a provenance record, a WAV carries it in a `LIST`/`INFO` chunk: `ICMT` holds the
record as JSON (as a PNG's `genserve` chunk does), `ISFT` the service and its version, `INAM` the model and
version; a FLAC file carries the same three in its Vorbis comments (`COMMENT`, `SOFTWARE`, `TITLE`), written by
libsndfile (`soundfile`). Both hold the same 16-bit samples.
"""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import soundfile

from app.api.schemas import Provenance
from app.latent.provenance import json_text

# Silence between clips played one after another, in seconds.
GAP_SECONDS = 0.25
_BITS = 16
_PCM = 1
_FULL_SCALE = 2 ** (_BITS - 1) - 1


def pcm16(clips: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] (clipped there) as little-endian 16-bit integers, rounded to the nearest."""
    scaled = np.rint(np.clip(clips, -1.0, 1.0) * _FULL_SCALE)
    return scaled.astype("<i2")


def gap_samples(sample_rate: int) -> int:
    """Samples of silence between two clips in a row."""
    return round(GAP_SECONDS * sample_rate)


def in_a_row(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """The clips ``[N, samples]`` one after another, `GAP_SECONDS` of silence between each and the next."""
    gap = np.zeros(gap_samples(sample_rate), dtype=clips.dtype)
    pieces: list[np.ndarray] = []
    for index, clip in enumerate(clips):
        if index:
            pieces.append(gap)
        pieces.append(clip)
    return np.concatenate(pieces)


def wav_bytes(samples: np.ndarray, sample_rate: int, provenance: Provenance | None = None) -> bytes:
    """Mono float `samples` (one clip, or clips already put in a row) as a 16-bit PCM WAV, with `provenance` in a
    `LIST`/`INFO` chunk before the samples."""
    data = pcm16(samples).tobytes()
    block_align = _BITS // 8
    fmt = struct.pack("<HHIIHH", _PCM, 1, sample_rate, sample_rate * block_align, block_align, _BITS)
    chunks = _chunk(b"fmt ", fmt)
    if provenance is not None:
        chunks += _info_chunk(provenance)
    chunks += _chunk(b"data", data)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def flac_bytes(samples: np.ndarray, sample_rate: int, provenance: Provenance | None = None) -> bytes:
    """Mono float `samples` as a 16-bit FLAC file (the WAV's samples, losslessly compressed), with `provenance`
    in its Vorbis comments."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", sample_rate, 1, format="FLAC", subtype="PCM_16") as file:
        if provenance is not None:
            for key, value in _provenance_entries(provenance).items():
                setattr(file, _FLAC_FIELDS[key], value)
        file.write(pcm16(samples))
    return buffer.getvalue()


def wav_base64(samples: np.ndarray, sample_rate: int, provenance: Provenance | None = None) -> str:
    return base64.b64encode(wav_bytes(samples, sample_rate, provenance)).decode("ascii")


def _provenance_entries(record: Provenance) -> dict[bytes, str]:
    """The provenance a sound file carries, by its RIFF INFO id: the model, the service, the record as JSON."""
    return {
        b"INAM": f"{record.model} version {record.version}",
        b"ISFT": f"genserve {record.service_version}",
        b"ICMT": json_text(record),
    }


# Where a FLAC file keeps each of `_provenance_entries` (libsndfile's names for Vorbis comments).
_FLAC_FIELDS = {b"INAM": "title", b"ISFT": "software", b"ICMT": "comment"}


def _info_chunk(record: Provenance) -> bytes:
    entries = _provenance_entries(record)
    body = b"INFO" + b"".join(_chunk(key, value.encode("ascii") + b"\0") for key, value in entries.items())
    return _chunk(b"LIST", body)


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    """A RIFF chunk: id, size, body, and a pad byte when the size is odd."""
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")
