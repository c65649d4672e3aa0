"""A loaded image generator: its SavedModel's signatures, checked against the metadata, and calling them
(blocking; runs on a worker thread)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.image.inferred import inferred_generator
from app.latent.runtime import warm_up_inputs
from app.serving.compiled_calls import BucketedCall, ChoiceCache
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
from genserve.conventions import cycled_labels
from genserve.outputs import probe_latents
from genserve.signatures import image_signature
from genserve.store import ModelMetadata

logger = logging.getLogger(__name__)


class ImageRuntime:
    """A loaded generator: `generate({"z": [B, latent_dim]}) -> uint8 [B, H, W, C]`.

    Conditional models also take ``label``; those exported with the embedding signatures instead take
    ``label_embedding`` (rows of `label_embeddings`, or blends of them) when it is given. VAEs can also
    `encode` uint8 images to their posterior mean and log-variance. `run` dispatches a batch by its inputs.
    """

    def __init__(self, path: Path, device: DeviceInfo) -> None:
        self.path = Path(path)
        self.device = device
        bare = store.is_bare_version(self.path)
        if not bare:
            self.metadata = read_metadata(self.path)
        self.evaluation = read_optional_record(self.path, store.read_evaluation)
        # The loaded object owns the variables its signatures read, so it lives as long as the runtime.
        self._saved_model = load_saved_model(self.path, device)
        signature = serving_signature(self._saved_model, self.path)
        # Only the calls are kept: the signatures behind them are what they call.
        on_cpu = device.kind == "CPU"
        self._generate_call: SignatureCall = signature_call(signature, on_cpu=on_cpu)
        # The generator's call chosen by measurement (`tune_calls`), once it is.
        self.calls: BucketedCall | None = None
        self._tunable = None if bare else signature
        if bare:  # TensorFlow Serving's layout alone: what it is comes from its signature and a probe call
            self.metadata, self._generate_call = inferred_generator(signature, self._generate_call, self.path)
            self._input_names = [store.LATENT_INPUT]
        else:
            self._input_names = _check_signature(signature, self.metadata)
        from_embedding, self.label_embeddings = _embedding_signatures(self._saved_model, self.metadata)
        encoder = _encode_signature(self._saved_model, self.metadata, self.path)
        self._from_embedding_call = (
            None if from_embedding is None else signature_call(from_embedding, on_cpu=on_cpu)
        )
        self._encode_call = None if encoder is None else signature_call(encoder, on_cpu=on_cpu)

    @property
    def can_encode(self) -> bool:
        """Whether images can be mapped to latents (a VAE exported with its encoder)."""
        return self._encode_call is not None

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """One batch: images in `inputs` are encoded (see `encode`), anything else generates images."""
        if store.IMAGES_INPUT in inputs:
            return self.encode(inputs[store.IMAGES_INPUT])
        return self.generate(inputs)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 images ``[B, H, W, C]`` to float32 ``[B, 2, latent_dim]``: each one's (mean, log-variance)."""
        import tensorflow as tf

        if self._encode_call is None:
            raise ValueError(f"{self.path} has no {store.ENCODE_SIGNATURE!r} signature")
        with tf.device(self.device.name):
            outputs = self._encode_call({store.IMAGES_INPUT: np.asarray(images, dtype=np.uint8)})
        mean = np.asarray(outputs[store.LATENT_MEAN_OUTPUT], dtype=np.float32)
        log_var = np.asarray(outputs[store.LATENT_LOG_VAR_OUTPUT], dtype=np.float32)
        return np.stack([mean, log_var], axis=1)

    def generate(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import tensorflow as tf

        call, input_names = self._generate_call, self._input_names
        if store.LABEL_EMBEDDING_INPUT in inputs:
            if self._from_embedding_call is None:
                raise ValueError(f"{self.path} has no {store.FROM_EMBEDDING_SIGNATURE!r} signature")
            call, input_names = self._from_embedding_call, [store.LATENT_INPUT, store.LABEL_EMBEDDING_INPUT]
        missing = set(input_names) - set(inputs)
        if missing:
            raise ValueError(f"model inputs missing: {sorted(missing)}")
        with tf.device(self.device.name):
            outputs = call({name: inputs[name] for name in input_names})
        return np.asarray(outputs[store.IMAGES_OUTPUT])

    def bucketed_calls(self, max_batch_size: int) -> BucketedCall | None:
        """The generator's calls per batch bucket, serving the plain call until tuned; None for a bare version."""
        if self._tunable is None:
            return None
        if self.calls is None:
            self.calls = BucketedCall(self._tunable, self._generate_call, max_batch_size=max_batch_size)
            self._generate_call = self.calls
        return self.calls

    def tune_calls(
        self, max_batch_size: int, cache: ChoiceCache | None, lock: threading.Lock, name: str
    ) -> None:
        """Choose the generator's call per batch bucket by measurement, on a daemon thread (`compiled_calls`);
        the plain call serves meanwhile. Tunings that share `lock` run one at a time, so they time alone."""
        calls = self.bucketed_calls(max_batch_size)
        if calls is None or calls.state != "plain":
            return
        calls.state = "waiting"

        def run() -> None:
            with lock:
                calls.run_tuning(self.probe_inputs, cache, name)

        threading.Thread(target=run, name=f"tune-{name}", daemon=True).start()

    def stop_tuning(self) -> None:
        if self.calls is not None:
            self.calls.stop()

    def probe_inputs(self, size: int) -> dict[str, np.ndarray]:
        """Standard-normal latents (and classes 0, 1, ...) for `size` images, the same at every call."""
        inputs = {store.LATENT_INPUT: probe_latents(self.metadata.latent_dim, size)}
        if store.LABEL_INPUT in self._input_names:
            inputs[store.LABEL_INPUT] = cycled_labels(size, max(1, len(self.metadata.class_names or [])))
        return inputs

    def warm_up(self, batch_sizes: list[int]) -> float:
        """Call the model once per batch size so the first requests don't pay for tracing; returns seconds."""
        started = time.perf_counter()
        for size in batch_sizes:
            images = self.generate(warm_up_inputs(size, self.metadata.latent_dim, self._input_names))
            if images.shape != (size, *self.metadata.image_shape):
                raise ModelLoadError(
                    f"model returned shape {images.shape}, metadata promises {(size, *self.metadata.image_shape)}"
                )
            if self._encode_call is not None:
                latents = self.encode(images)
                if latents.shape != (size, 2, self.metadata.latent_dim):
                    raise ModelLoadError(
                        f"encoder returned shape {latents.shape} for {size} images, expected "
                        f"{(size, 2, self.metadata.latent_dim)}"
                    )
        return time.perf_counter() - started


def _check_signature(signature: Any, metadata: ModelMetadata) -> list[str]:
    """Check the signature against the metadata; return the input names to feed."""
    import tensorflow as tf

    input_names = check_signature_inputs(signature, image_signature(metadata).inputs)
    outputs: dict[str, Any] = signature.structured_outputs
    images = outputs.get(store.IMAGES_OUTPUT)
    if images is None or images.dtype != tf.uint8:
        raise ModelLoadError(f"signature output {store.IMAGES_OUTPUT!r} must be uint8, got {images}")
    expected = list(metadata.image_shape)
    actual = images.shape.as_list()[1:] if images.shape.rank == 4 else None
    if actual is None or any(
        dim is not None and dim != want for dim, want in zip(actual, expected, strict=True)
    ):
        raise ModelLoadError(f"signature output shape {images.shape} does not match metadata {expected}")
    return input_names


def _embedding_signatures(saved_model: Any, metadata: ModelMetadata) -> tuple[Any, np.ndarray | None]:
    """The `from_embedding` signature and the class embedding table, or (None, None) when not usable.

    They are optional: a model without them (or with ones that do not fit) still serves, without blending.
    """
    signatures = saved_model.signatures
    from_embedding = signatures.get(store.FROM_EMBEDDING_SIGNATURE)
    table_signature = signatures.get(store.LABEL_EMBEDDINGS_SIGNATURE)
    if not metadata.conditional or from_embedding is None or table_signature is None:
        return None, None
    table = np.asarray(table_signature()[store.LABEL_EMBEDDINGS_OUTPUT].numpy(), dtype=np.float32)
    embedding = from_embedding.structured_input_signature[1].get(store.LABEL_EMBEDDING_INPUT)
    num_classes = len(metadata.class_names or [])
    if (
        table.ndim != 2
        or table.shape[0] != num_classes
        or embedding is None
        or embedding.shape[-1] != table.shape[1]
    ):
        logger.warning(
            "ignoring label embedding signatures of %s: they do not match the metadata", metadata.name
        )
        return None, None
    return from_embedding, table


def _encode_signature(saved_model: Any, metadata: ModelMetadata, path: Path) -> Any:
    """The `encode` signature of a VAE, checked against the metadata; None for other kinds."""
    import tensorflow as tf

    if not metadata.has_encoder:
        return None
    signature = saved_model.signatures.get(store.ENCODE_SIGNATURE)
    if signature is None:
        raise ModelLoadError(
            f"SavedModel in {path} is a {metadata.kind} without an {store.ENCODE_SIGNATURE!r} signature"
        )
    images = signature.structured_input_signature[1].get(store.IMAGES_INPUT)
    outputs = signature.structured_outputs
    expected = [None, *metadata.image_shape]
    if images is None or images.dtype != tf.uint8 or images.shape.as_list() != expected:
        raise ModelLoadError(
            f"{store.ENCODE_SIGNATURE!r} input {store.IMAGES_INPUT!r} must be uint8 {expected}, got {images}"
        )
    for name in (store.LATENT_MEAN_OUTPUT, store.LATENT_LOG_VAR_OUTPUT):
        output = outputs.get(name)
        if output is None or output.dtype != tf.float32 or output.shape.as_list()[-1] != metadata.latent_dim:
            raise ModelLoadError(
                f"{store.ENCODE_SIGNATURE!r} output {name!r} must be float32 [None, {metadata.latent_dim}], got {output}"
            )
    return signature
