"""Loading a version (SavedModel, warm-up, batcher) and unloading it once its work has finished."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from app import heap
from app.batching import Batcher
from app.metrics import Metrics
from app.registry import ModelVersion, VersionStatus
from app.runtime import DeviceInfo, GeneratorRuntime
from app.text_batching import TextBatcher
from app.text_runtime import TextRuntime
from genserve import store

logger = logging.getLogger(__name__)

# Longest load-failure reason that /models and 503s show; the log has the whole error.
_MAX_REASON_CHARS = 300
# An absolute path of two or more components, as file-system errors quote them.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/:]+/)+([^\s'\"/:]*)")

BatcherFactory = Callable[[str, int, GeneratorRuntime], Batcher]
TextBatcherFactory = Callable[[str, int, TextRuntime], TextBatcher]


class ModelLoader:
    """Turns a ModelVersion into a serving one, or marks it failed with the reason; never raises."""

    def __init__(
        self,
        batcher_factory: BatcherFactory,
        metrics: Metrics,
        warmup_batch_sizes: list[int],
        text_batcher_factory: TextBatcherFactory | None = None,
    ) -> None:
        self._batcher_factory = batcher_factory
        self._text_batcher_factory = text_batcher_factory
        self._metrics = metrics
        self._warmup_batch_sizes = warmup_batch_sizes
        # One load at a time: loads compete with serving for the same cores.
        self._lock = anyio.Lock()

    async def load(self, model_version: ModelVersion, device: DeviceInfo) -> bool:
        async with self._lock:
            return await self._load(model_version, device)

    async def _load(self, model_version: ModelVersion, device: DeviceInfo) -> bool:
        model_version.status = VersionStatus.LOADING
        started = time.perf_counter()
        try:
            runtime = await anyio.to_thread.run_sync(self._load_runtime, model_version.path, device)
            if isinstance(runtime, TextRuntime):
                await self._start_text(model_version, runtime)
            else:
                batcher = self._batcher_factory(model_version.name, model_version.version, runtime)
                await batcher.start()
                model_version.runtime, model_version.batcher = runtime, batcher
        except Exception as error:  # a bad version must never take the service down
            model_version.status = VersionStatus.FAILED
            model_version.error = public_reason(error, model_version)
            self._metrics.load_failed(model_version.name)
            logger.error("failed to load %s version %d: %s", model_version.name, model_version.version, error)
            return False
        model_version.warmup_s = time.perf_counter() - started
        model_version.error = None
        model_version.status = VersionStatus.AVAILABLE
        heap.freeze_long_lived()
        self._metrics.loaded(
            model_version.name,
            model_version.version,
            runtime.metadata.kind,
            device.name,
            model_version.warmup_s,
        )
        logger.info(
            "loaded %s version %d on %s in %.2f s",
            model_version.name,
            model_version.version,
            device.name,
            model_version.warmup_s,
        )
        return True

    def _load_runtime(self, path: Path, device: DeviceInfo) -> GeneratorRuntime | TextRuntime:
        runtime = TextRuntime(path, device) if _is_text(path) else GeneratorRuntime(path, device)
        runtime.warm_up(self._warmup_batch_sizes)
        return runtime

    async def _start_text(self, model_version: ModelVersion, runtime: TextRuntime) -> None:
        if self._text_batcher_factory is None:
            raise ValueError(f"this service does not serve {runtime.metadata.kind} models")
        batcher = self._text_batcher_factory(model_version.name, model_version.version, runtime)
        await batcher.start()
        model_version.text_runtime, model_version.text_batcher = runtime, batcher

    async def unload(self, model_version: ModelVersion, *, drain_timeout_s: float) -> None:
        """Stop the version's batcher after its queued and in-flight requests finish, then drop the model."""
        if model_version.batcher is not None:
            await model_version.batcher.stop(drain=True, timeout_s=drain_timeout_s)
        if model_version.text_batcher is not None:
            await model_version.text_batcher.stop(drain=True, timeout_s=drain_timeout_s)
        runtime = model_version.runtime or model_version.text_runtime
        if runtime is not None:
            self._metrics.unloaded(
                model_version.name, model_version.version, runtime.metadata.kind, runtime.device.name
            )
        model_version.runtime = None
        model_version.batcher = None
        model_version.text_runtime = None
        model_version.text_batcher = None
        heap.release_unloaded()
        logger.info("unloaded %s version %d", model_version.name, model_version.version)


def _is_text(path: Path) -> bool:
    """Whether the version's metadata names a text generator; unreadable metadata is the image loader's to report."""
    try:
        return store.read_metadata(path).is_text
    except (OSError, ValueError):
        return False


def public_reason(error: Exception, model_version: ModelVersion) -> str:
    """Why a load failed, as clients may read it: the version's folder relative to the store, no other paths."""
    reason = str(error) or type(error).__name__
    relative = f"{model_version.name}/{model_version.version}"
    for folder in sorted({str(model_version.path.resolve()), str(model_version.path)}, key=len, reverse=True):
        reason = reason.replace(folder, relative)
    reason = _ABSOLUTE_PATH.sub(lambda match: f".../{match.group(1)}", reason)
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 1] + "…"
