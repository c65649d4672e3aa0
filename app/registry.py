"""The registry: which models and versions the store holds, their load status, and resolving requests."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from app.batching import Batcher
from app.errors import ModelNotFound, ModelNotReady, VersionNotFound
from app.metrics import Metrics
from app.runtime import DeviceInfo, GeneratorRuntime
from genserve import store
from genserve.store import ModelMetadata

logger = logging.getLogger(__name__)

BatcherFactory = Callable[[str, int, GeneratorRuntime], Batcher]


class VersionStatus(str, enum.Enum):
    LOADING = "loading"
    AVAILABLE = "available"
    FAILED = "failed"


@dataclass
class ModelVersion:
    """One version of one model and, once loaded, the runtime and batcher serving it."""

    name: str
    version: int
    path: Path
    status: VersionStatus = VersionStatus.LOADING
    error: str | None = None
    runtime: GeneratorRuntime | None = None
    batcher: Batcher | None = None
    warmup_s: float | None = None
    loaded_at: float | None = None

    @property
    def metadata(self) -> ModelMetadata:
        """Metadata of a loaded version; asking before it has loaded is a 503."""
        if self.runtime is None:
            raise ModelNotReady(f"model {self.name!r} version {self.version} is not loaded")
        return self.runtime.metadata


@dataclass
class ModelEntry:
    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def latest_available(self) -> ModelVersion | None:
        ready = [v for v in self.versions.values() if v.status is VersionStatus.AVAILABLE]
        return max(ready, key=lambda v: v.version) if ready else None


class ModelRegistry:
    """Loads the latest complete version of every model in the store and resolves requests to it."""

    def __init__(
        self,
        store_path: Path,
        batcher_factory: BatcherFactory,
        *,
        default_model: str | None = None,
        warmup_batch_sizes: list[int] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store_path = Path(store_path)
        self.device = DeviceInfo(name="not yet chosen", kind="none")
        self.closing = False
        self._batcher_factory = batcher_factory
        self._configured_default = default_model
        self._warmup_batch_sizes = warmup_batch_sizes or [1]
        self._entries: dict[str, ModelEntry] = {}
        self._metrics = metrics or Metrics()
        self.scanned = False

    @property
    def entries(self) -> list[ModelEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    @property
    def default_model(self) -> str | None:
        if self._configured_default:
            return self._configured_default
        return min(self._entries) if self._entries else None

    def is_ready(self) -> bool:
        """True once the default model has a warmed-up version serving."""
        name = self.default_model
        entry = self._entries.get(name) if name else None
        return not self.closing and entry is not None and entry.latest_available() is not None

    def scan(self) -> list[ModelVersion]:
        """Register the latest complete version of each model found in the store; return the new ones."""
        found: list[ModelVersion] = []
        for name in store.list_models(self.store_path):
            version = store.latest_version(self.store_path, name)
            entry = self._entries.setdefault(name, ModelEntry(name))
            if version is not None and version not in entry.versions:
                model_version = ModelVersion(name, version, store.version_dir(self.store_path, name, version))
                entry.versions[version] = model_version
                found.append(model_version)
        self.scanned = True
        if not self._entries:
            logger.warning("no complete model versions found under %s", self.store_path)
        if self._configured_default and self._configured_default not in self._entries:
            logger.error("default model %r is not in the store %s", self._configured_default, self.store_path)
        return found

    async def load_all(self, device: DeviceInfo) -> None:
        """Choose the device, then load and warm up every model found, one after another."""
        self.device = device
        for model_version in self.scan():
            await self.load(model_version)

    async def load(self, model_version: ModelVersion) -> None:
        started = time.perf_counter()
        try:
            runtime = await anyio.to_thread.run_sync(self._load_runtime, model_version.path)
            batcher = self._batcher_factory(model_version.name, model_version.version, runtime)
            await batcher.start()
        except Exception as error:  # a bad version must never take the service down
            model_version.status = VersionStatus.FAILED
            model_version.error = str(error)
            self._metrics.load_failed(model_version.name)
            logger.error("failed to load %s version %d: %s", model_version.name, model_version.version, error)
            return
        model_version.runtime = runtime
        model_version.batcher = batcher
        model_version.warmup_s = time.perf_counter() - started
        model_version.loaded_at = time.time()
        model_version.status = VersionStatus.AVAILABLE
        self._metrics.loaded(
            model_version.name,
            model_version.version,
            runtime.metadata.kind,
            self.device.name,
            model_version.warmup_s,
        )
        logger.info(
            "loaded %s version %d on %s in %.2f s",
            model_version.name,
            model_version.version,
            self.device.name,
            model_version.warmup_s,
        )

    def _load_runtime(self, path: Path) -> GeneratorRuntime:
        runtime = GeneratorRuntime(path, self.device)
        runtime.warm_up(self._warmup_batch_sizes)
        return runtime

    def get_entry(self, name: str | None) -> ModelEntry:
        if not self.scanned:
            raise ModelNotReady("models are still being discovered", headers={"Retry-After": "2"})
        resolved = name or self.default_model
        if resolved is None:
            raise ModelNotFound(f"no models are loaded from {self.store_path.name!r}")
        entry = self._entries.get(resolved)
        if entry is None:
            raise ModelNotFound(f"model {resolved!r} not found; available: {sorted(self._entries) or 'none'}")
        return entry

    def resolve(self, name: str | None, version: int | None) -> ModelVersion:
        """The serving version for a request, or the 404/503 error that explains why there is none."""
        entry = self.get_entry(name)
        if version is None:
            chosen = entry.latest_available()
            if chosen is None:
                raise _not_ready(entry)
            return chosen
        model_version = entry.versions.get(version)
        if model_version is None:
            raise VersionNotFound(
                f"model {entry.name!r} has no loaded version {version}; loaded: {sorted(entry.versions)}"
            )
        if model_version.status is not VersionStatus.AVAILABLE:
            raise _not_ready(entry, model_version)
        return model_version

    def begin_draining(self) -> None:
        """Stop taking new work: readiness turns false and generation answers 503."""
        self.closing = True

    def pending_images(self) -> int:
        """Images queued or inside a model call, across every loaded version."""
        return sum(
            v.batcher.queued_images + v.batcher.in_flight_images
            for entry in self._entries.values()
            for v in entry.versions.values()
            if v.batcher is not None
        )

    async def close(self, *, drain: bool = True, timeout_s: float = 30.0) -> None:
        self.closing = True
        for entry in self._entries.values():
            for model_version in entry.versions.values():
                if model_version.batcher is not None:
                    await model_version.batcher.stop(drain=drain, timeout_s=timeout_s)


def _not_ready(entry: ModelEntry, model_version: ModelVersion | None = None) -> ModelNotReady:
    versions = [model_version] if model_version else list(entry.versions.values())
    if any(v.status is VersionStatus.LOADING for v in versions):
        return ModelNotReady(f"model {entry.name!r} is still loading", headers={"Retry-After": "2"})
    errors = "; ".join(f"version {v.version}: {v.error}" for v in versions if v.error)
    return ModelNotReady(f"model {entry.name!r} has no servable version ({errors or 'none loaded'})")
