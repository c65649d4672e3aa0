"""The process-wide TensorFlow set-up (device, threads, GPU memory, bfloat16 on CPUs that have it) and reading a
published version from disk (its metadata and SavedModel), for every kind of model (blocking; worker threads)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from genserve import store
from genserve.signatures import TensorSpec, describe, dtype_name
from genserve.store import ModelMetadata

logger = logging.getLogger(__name__)

_Record = TypeVar("_Record")


class ModelLoadError(Exception):
    """The version on disk cannot be served; the message says why."""


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    kind: str  # "GPU" or "CPU"


def configure_devices(
    gpu_memory_limit_mb: int | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    cpu_bfloat16: bool = False,
) -> DeviceInfo:
    """Use the first GPU when one is visible, growing its memory on demand; the CPU otherwise.

    Thread counts apply only before TensorFlow has run anything in this process; later they are kept as they are.
    `cpu_bfloat16` turns on TensorFlow's oneDNN bfloat16 rewrite for graphs loaded from then on, for the whole
    process, when the CPU has bfloat16 instructions (emulated bfloat16 would be slower than float32).
    """
    import tensorflow as tf

    if cpu_bfloat16:
        _use_cpu_bfloat16(tf)

    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        logger.warning("TensorFlow was already running; its thread counts stay as they were")

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            if gpu_memory_limit_mb:
                config = tf.config.LogicalDeviceConfiguration(memory_limit=gpu_memory_limit_mb)
                tf.config.set_logical_device_configuration(gpu, [config])
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            # Devices were already initialised by an earlier app in this process; keep their settings.
            logger.debug("GPU settings already fixed for %s", gpu.name)
    device = DeviceInfo(name="/GPU:0", kind="GPU") if gpus else DeviceInfo(name="/CPU:0", kind="CPU")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "TensorFlow's choice of"
    logger.info(
        "generation runs on %s (%d GPU(s) visible; %s threads per operation)", device.name, len(gpus), threads
    )
    return device


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_CPU_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def cpu_has_bfloat16(cpuinfo: str) -> bool:
    """Whether a Linux /proc/cpuinfo text lists bfloat16 instructions (AVX512-BF16 or AMX-BF16)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return not _CPU_BFLOAT16_FLAGS.isdisjoint(value.split())
    return False


def cpu_supports_bfloat16() -> bool:
    """Whether this machine's CPU has bfloat16 instructions; False where that cannot be read (not Linux)."""
    try:
        return cpu_has_bfloat16(_CPUINFO.read_text())
    except OSError:
        return False


def _use_cpu_bfloat16(tf: Any) -> None:
    if not cpu_supports_bfloat16():
        logger.warning("bfloat16 asked for, but this CPU has no bfloat16 instructions; staying in float32")
        return
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    logger.info("float32 graphs run in bfloat16 on this CPU (oneDNN)")


def read_optional_record(path: Path, read: Callable[[Path], _Record | None]) -> _Record | None:
    """A version's optional record (its evaluation), read once at load; None when it has none or it cannot be
    read, which is logged and does not stop the version from serving."""
    try:
        return read(path)
    except (OSError, ValueError) as error:
        logger.warning("ignoring an unreadable record in %s: %s", path, error)
        return None


def read_metadata(path: Path) -> ModelMetadata:
    try:
        return store.read_metadata(path)
    except FileNotFoundError as error:
        raise ModelLoadError(f"{store.METADATA_FILE} missing in {path}") from error
    except store.StoreFileError as error:
        raise ModelLoadError(str(error)) from error
    except ValueError as error:
        raise ModelLoadError(f"{store.METADATA_FILE} in {path} is invalid: {error}") from error


def load_saved_model(path: Path, device: DeviceInfo) -> Any:
    """The SavedModel of the version folder `path`, once nothing in the folder could make TensorFlow's reads
    wait forever (a named pipe, socket or device)."""
    import tensorflow as tf

    try:
        store.check_saved_model_files(path)
        with tf.device(device.name):
            return tf.saved_model.load(str(path))
    except store.StoreFileError as error:
        raise ModelLoadError(str(error)) from error
    except Exception as error:  # TF raises many types for a damaged SavedModel
        raise ModelLoadError(f"SavedModel in {path} cannot be loaded: {error}") from error


def serving_signature(saved_model: Any, path: Path) -> Any:
    """The SavedModel's `serving_default` signature; a load error when it has none."""
    signature = saved_model.signatures.get(store.SIGNATURE_NAME)
    if signature is None:
        raise ModelLoadError(f"SavedModel in {path} has no {store.SIGNATURE_NAME!r} signature")
    return signature


def check_signature_inputs(signature: Any, expected: list[TensorSpec]) -> list[str]:
    """Check that the signature takes the `expected` inputs (dtype, rank, last dimension); return the names of
    the inputs it takes, sorted, to feed."""
    inputs: dict[str, Any] = signature.structured_input_signature[1]
    for spec in expected:
        given = inputs.get(spec.name)
        if (
            given is None
            or given.dtype.name != dtype_name(spec.dtype)
            or given.shape.rank != len(spec.shape)
            or spec.shape[-1] not in (-1, given.shape.as_list()[-1])
        ):
            raise ModelLoadError(f"signature input {spec.name!r} must be {_without_name(spec)}, got {given}")
    return sorted(inputs)


def _without_name(spec: TensorSpec) -> str:
    return describe(spec).removeprefix(f"{spec.name} ")
