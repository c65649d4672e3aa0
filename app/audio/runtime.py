"""A loaded sound generator: its SavedModel's `serving_default`, checked against the metadata, and calling it
(blocking; runs on a worker thread)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from app.latent.runtime import warm_up_inputs
from app.serving.runtime import (
    DeviceInfo,
    ModelLoadError,
    check_signature_inputs,
    load_saved_model,
    read_metadata,
    read_optional_record,
    serving_signature,
)
from app.serving.signature_calls import SignatureCall, signature_call
from genserve import store
from genserve.signatures import audio_signature
from genserve.store import AudioInfo, ModelMetadata


class AudioRuntime:
    """A loaded sound generator: `run({"z": [B, latent_dim]}) -> float32 [B, samples]`, mono waveforms in
    [-1, 1]; conditional ones also take ``label``."""

    def __init__(self, path: Path, device: DeviceInfo) -> None:
        self.path = Path(path)
        self.device = device
        self.metadata = read_metadata(self.path)
        self.audio = _audio_info(self.metadata, self.path)
        self.evaluation = read_optional_record(self.path, store.read_evaluation)
        # The loaded object owns the variables its signature reads, so it lives as long as the runtime.
        self._saved_model = load_saved_model(self.path, device)
        signature = serving_signature(self._saved_model, self.path)
        self._input_names = _check_signature(signature, self.metadata, self.audio)
        self._call: SignatureCall = signature_call(signature, on_cpu=device.kind == "CPU")

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """One batch of clips: float32 ``[B, samples]``."""
        import tensorflow as tf

        missing = set(self._input_names) - set(inputs)
        if missing:
            raise ValueError(f"model inputs missing: {sorted(missing)}")
        with tf.device(self.device.name):
            outputs = self._call({name: inputs[name] for name in self._input_names})
        return np.asarray(outputs[store.AUDIO_OUTPUT], dtype=np.float32)

    def warm_up(self, batch_sizes: list[int]) -> float:
        """Call the model once per batch size, so the first requests don't pay for tracing, and check that it
        answers the clips the metadata promises; returns seconds."""
        started = time.perf_counter()
        for size in batch_sizes:
            clips = self.run(warm_up_inputs(size, self.metadata.latent_dim, self._input_names))
            if clips.shape != (size, self.audio.samples):
                raise ModelLoadError(
                    f"model returned shape {clips.shape}, metadata promises {(size, self.audio.samples)}"
                )
            if not np.isfinite(clips).all():
                raise ModelLoadError("model returned samples that are not finite numbers")
        return time.perf_counter() - started


def _audio_info(metadata: ModelMetadata, path: Path) -> AudioInfo:
    if metadata.audio is None:
        raise ModelLoadError(f"{store.METADATA_FILE} in {path} describes no sound generator")
    return metadata.audio


def _check_signature(signature: Any, metadata: ModelMetadata, audio: AudioInfo) -> list[str]:
    """Check the signature against the metadata; return the input names to feed."""
    import tensorflow as tf

    input_names = check_signature_inputs(signature, audio_signature(metadata).inputs)
    clips = signature.structured_outputs.get(store.AUDIO_OUTPUT)
    if clips is None or clips.dtype != tf.float32 or clips.shape.rank != 2:
        raise ModelLoadError(
            f"signature output {store.AUDIO_OUTPUT!r} must be float32 [None, samples], got {clips}"
        )
    samples = clips.shape.as_list()[1]
    if samples is not None and samples != audio.samples:
        raise ModelLoadError(
            f"signature output {store.AUDIO_OUTPUT!r} has {samples} samples per clip, metadata promises "
            f"{audio.samples}"
        )
    return input_names
