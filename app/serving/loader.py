"""Loading a version (SavedModel, warm-up, batcher) and unloading it once its work has finished."""

from __future__ import annotations

import logging
import re
import time

import anyio

from app.metrics import Metrics
from app.serving import heap
from app.serving.registry import ModelVersion, VersionStatus
from app.serving.runtime import DeviceInfo
from app.serving.servable import ModelKinds

logger = logging.getLogger(__name__)

# Longest load-failure reason that /models and 503s show; the log has the whole error.
_MAX_REASON_CHARS = 300
# An absolute path of two or more components, as file-system errors quote them.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/:]+/)+([^\s'\"/:]*)")


class ModelLoader:
    """Turns a ModelVersion into a serving one, or marks it failed with the reason; never raises."""

    def __init__(self, kinds: ModelKinds, metrics: Metrics) -> None:
        self._kinds = kinds
        self._metrics = metrics
        # One load at a time: loads compete with serving for the same cores.
        self._lock = anyio.Lock()

    async def load(self, model_version: ModelVersion, device: DeviceInfo) -> bool:
        async with self._lock:
            return await self._load(model_version, device)

    async def _load(self, model_version: ModelVersion, device: DeviceInfo) -> bool:
        model_version.status = VersionStatus.LOADING
        started = time.perf_counter()
        try:
            servable = await anyio.to_thread.run_sync(self._kinds.load, model_version.path, device)
            await servable.start(model_version.name, model_version.version)
            model_version.servable = servable
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
            servable.metadata.kind,
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

    async def unload(self, model_version: ModelVersion, *, drain_timeout_s: float) -> None:
        """Stop the version's work after its queued and in-flight requests finish, then drop the model."""
        servable = model_version.servable
        if servable is not None:
            await servable.stop(drain=True, timeout_s=drain_timeout_s)
            self._metrics.unloaded(
                model_version.name, model_version.version, servable.metadata.kind, servable.device.name
            )
        model_version.servable = None
        heap.release_unloaded()
        logger.info("unloaded %s version %d", model_version.name, model_version.version)


def public_reason(error: Exception, model_version: ModelVersion) -> str:
    """Why a load failed, as clients may read it: the version's folder relative to the store, no other paths."""
    reason = str(error) or type(error).__name__
    relative = f"{model_version.name}/{model_version.version}"
    for folder in sorted({str(model_version.path.resolve()), str(model_version.path)}, key=len, reverse=True):
        reason = reason.replace(folder, relative)
    reason = _ABSOLUTE_PATH.sub(lambda match: f".../{match.group(1)}", reason)
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 1] + "…"
