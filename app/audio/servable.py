"""A sound generator version as a servable: an `AudioRuntime` behind the adaptive batcher image generators use
(`app/latent/servable.py`); what it answers to `POST /generate`, `GET /interpolate` and the inference protocols
is its kind's (`app/audio/kind.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.api.schemas import VersionInfo
from app.audio.runtime import AudioRuntime
from app.latent.servable import LatentServable
from app.server.quotas import CLIPS
from app.serving.registry import INTERPOLATE
from genserve.signatures import Signature, audio_signature

if TYPE_CHECKING:
    from app.audio.kind import AudioKind

# The capability of every sound generator: what `POST /generate` serves it for (image-only routes ask for
# `generate`, which it does not have).
GENERATE_AUDIO = "generate_audio"
# What `POST /generate` answers for a sound generator, the default first.
AUDIO_FORMATS = ["wav", "flac", "zip", "npy", "json"]


class AudioServable(LatentServable[AudioRuntime]):
    """One sound generator version: its runtime, and its batcher once started."""

    usage = "generates sound: use POST /generate (format=wav, flac, zip, npy or json) or GET /interpolate"
    quota_unit = CLIPS
    kind: AudioKind

    def __init__(self, runtime: AudioRuntime, kind: AudioKind) -> None:
        super().__init__(runtime, kind)
        self.kind = kind
        self.signature: Signature = audio_signature(self.metadata)
        self.capabilities = [GENERATE_AUDIO, INTERPOLATE]
        if self.metadata.conditional:
            self.capabilities.append("labels")

    def _describe(self, info: VersionInfo) -> None:
        metadata, audio = self.metadata, self.runtime.audio
        info.latent_dim = metadata.latent_dim
        info.latent_scale = metadata.latent_scale
        info.classes = metadata.class_names
        info.sample_rate = audio.sample_rate
        info.samples = audio.samples
        info.seconds = audio.seconds
        info.formats = list(AUDIO_FORMATS)
