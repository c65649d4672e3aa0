"""Keeping the registry in step with the store: new versions, retries with backoff, retiring old versions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from app.metrics import Metrics
from app.server.errors import VersionNotFound
from app.serving.loader import ModelLoader
from app.serving.registry import ModelEntry, ModelRegistry, ModelVersion, VersionStatus
from app.serving.runtime import DeviceInfo
from app.serving.version_policy import VersionPolicy
from genserve import store

logger = logging.getLogger(__name__)

# A failed load is retried after DEFAULT_RETRY_INITIAL_S, doubling up to DEFAULT_RETRY_MAX_S (the settings'
# defaults): a broken version costs a few loads an hour, a fixed one is picked up within minutes.
DEFAULT_RETRY_INITIAL_S = 2.0
DEFAULT_RETRY_MAX_S = 300.0
# A replaced version keeps serving this long after its successor is available, for requests already routed.
_RETIRE_DELAY_S = 1.0


@dataclass(frozen=True)
class ModelListing:
    """One model as found in the store: its complete versions and labels (None: unreadable, keep the old)."""

    name: str
    complete: list[int]
    labels: dict[str, int] | None


class StoreWatcher:
    """Scans the store (at start, every poll interval, and on admin request) and loads/retires versions.

    A new version loads and warms up while the old one serves; requests switch to it the moment it is
    available; the old one is retired afterwards and unloaded once its queued work has finished. A
    failed load is retried with exponential backoff and never displaces a serving version. A scan that
    finds the store missing, empty or unreadable changes nothing.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        loader: ModelLoader,
        metrics: Metrics,
        *,
        policy: VersionPolicy,
        poll_interval_s: float,
        retry_initial_s: float,
        retry_max_s: float,
        drain_timeout_s: float,
        retire_delay_s: float = _RETIRE_DELAY_S,
    ) -> None:
        self.registry = registry
        self._loader = loader
        self._metrics = metrics
        self._policy = policy
        self._poll_interval_s = poll_interval_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._retire_delay_s = retire_delay_s
        self._drain_timeout_s = drain_timeout_s
        self._held_back: dict[str, set[int]] = {}
        self._skipped: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_lock = asyncio.Lock()

    async def start(self, device: DeviceInfo) -> None:
        """Load what the store holds, then keep polling it when a poll interval is set."""
        self.registry.device = device
        if self._poll_interval_s > 0:
            self._spawn(self._poll(), "genserve-store-poll")
        await self._sync_logged()

    async def sync(self, only: str | None = None, *, retry_now: bool = False) -> None:
        """One pass: register what the store holds, load what is due, retire what the policy dropped."""
        async with self._sync_lock:
            # Listing folders can block (network storage), so it happens on a worker thread.
            try:
                listings = await anyio.to_thread.run_sync(self._read_store, only)
            finally:
                # Requests get a definite answer after the first scan, even one that failed.
                self.registry.scanned = True
            if listings is None:
                return
            plans = [self._plan(listing, retry_now) for listing in listings]
            for entry, wanted, due in plans:
                for model_version in due:
                    await self._load(model_version)
                self._retire_unwanted(entry, wanted)

    async def reload(self, name: str) -> ModelEntry:
        """Rescan one model now, retrying failed versions and lifting admin unloads."""
        self._held_back.pop(name, None)
        await self.sync(only=name, retry_now=True)
        return self.registry.get_entry(name)

    async def unload(self, name: str, version: int) -> None:
        """Retire a version until the next reload of its model, even if the policy would serve it."""
        entry = self.registry.get_entry(name)
        if version not in entry.versions:
            raise VersionNotFound(f"model {name!r} has no loaded version {version}")
        self._held_back.setdefault(name, set()).add(version)
        self._retire(entry, version)

    async def close(self) -> None:
        """Stop polling and unload everything, letting queued work finish."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for model_version in list(self.registry.versions()):
            await self._loader.unload(model_version, drain_timeout_s=self._drain_timeout_s)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            await self._sync_logged()

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except Exception:  # the watcher must outlive any one bad scan
            logger.exception("store scan failed")
            self._metrics.store_scanned("error")

    def _scan(self) -> dict[str, list[int]] | None:
        """Each model's complete versions; None when the store is unreadable or holds nothing usable."""
        root = self.registry.store_path
        try:
            if not root.is_dir():
                raise FileNotFoundError(f"{root} is not a folder")
            scan = store.scan_store(root)
        except OSError as error:
            logger.warning("model store unreadable, keeping what is loaded: %s", error)
            self._metrics.store_scanned("error")
            return None
        self._report_skipped(scan.skipped)
        if not scan.models:
            logger.warning("no complete model versions under %s; keeping what is loaded", root)
            self._metrics.store_scanned("empty")
            return None
        self._metrics.store_scanned("ok")
        return scan.models

    def _report_skipped(self, skipped: list[store.SkippedEntry]) -> None:
        """Log and count each folder that names nothing, once for as long as it stays there."""
        current = {entry.path for entry in skipped}
        for entry in skipped:
            if entry.path not in self._skipped:
                logger.warning("model store: skipping %s: %s", entry.path, entry.reason)
                self._metrics.store_entry_skipped()
        self._skipped = current

    def _read_store(self, only: str | None) -> list[ModelListing] | None:
        """What the store holds now (blocking file-system reads); None when nothing usable was found."""
        models = self._scan()
        if models is None:
            return None
        root = self.registry.store_path
        return [
            ModelListing(name, complete, self._read_labels(root, name, complete))
            for name, complete in models.items()
            if only is None or name == only
        ]

    def _plan(
        self, listing: ModelListing, retry_now: bool
    ) -> tuple[ModelEntry, set[int], list[ModelVersion]]:
        """Register the versions a model should serve; return them and the ones to (re)load now."""
        entry = self.registry.entry(listing.name)
        complete = listing.complete
        if not complete:
            return entry, set(entry.versions), []
        if listing.labels is not None:
            entry.labels = listing.labels
        wanted = self._wanted(listing.name, complete, entry.labels)
        due = [self._ensure(entry, v) for v in sorted(wanted)]
        return entry, wanted, [v for v in due if self._due(v, retry_now)]

    def _retire_unwanted(self, entry: ModelEntry, wanted: set[int]) -> None:
        # Only once something wanted is serving, so a model never drops to nothing.
        if any(entry.versions[v].status is VersionStatus.AVAILABLE for v in wanted if v in entry.versions):
            for version in [v for v in entry.versions if v not in wanted]:
                self._retire(entry, version)

    def _wanted(self, name: str, complete: list[int], labels: dict[str, int]) -> set[int]:
        wanted = self._policy.select(complete) | {v for v in labels.values() if v in complete}
        return wanted - self._held_back.get(name, set())

    def _read_labels(self, root: Path, name: str, complete: list[int]) -> dict[str, int] | None:
        try:
            labels = store.read_labels(root, name)
        except (OSError, ValueError) as error:
            logger.warning("keeping the previous labels of %s: %s", name, error)
            return None
        missing = {label: v for label, v in labels.items() if v not in complete}
        if missing:
            logger.warning("labels of %s point at versions that are not complete: %s", name, missing)
        return labels

    def _ensure(self, entry: ModelEntry, version: int) -> ModelVersion:
        model_version = entry.versions.get(version)
        if model_version is None:
            path = store.version_dir(self.registry.store_path, entry.name, version)
            model_version = ModelVersion(entry.name, version, path)
            entry.versions[version] = model_version
        return model_version

    def _due(self, model_version: ModelVersion, retry_now: bool) -> bool:
        if model_version.status is VersionStatus.AVAILABLE:
            return False
        if model_version.status is VersionStatus.LOADING:  # registered, never tried
            return True
        return retry_now or model_version.retry_at is None or time.monotonic() >= model_version.retry_at

    async def _load(self, model_version: ModelVersion) -> None:
        if await self._loader.load(model_version, self.registry.device):
            model_version.failed_attempts = 0
            model_version.retry_at = None
            return
        model_version.failed_attempts += 1
        backoff = min(self._retry_initial_s * 2 ** (model_version.failed_attempts - 1), self._retry_max_s)
        model_version.retry_at = time.monotonic() + backoff
        logger.info("will retry %s version %d in %.0f s", model_version.name, model_version.version, backoff)

    def _retire(self, entry: ModelEntry, version: int) -> None:
        model_version = entry.versions.pop(version)
        logger.info("retiring %s version %d", entry.name, version)
        self._spawn(self._unload_later(model_version), f"genserve-unload-{entry.name}-{version}")

    async def _unload_later(self, model_version: ModelVersion) -> None:
        # Requests that resolved this version a moment ago still reach its batcher.
        await asyncio.sleep(self._retire_delay_s)
        await self._loader.unload(model_version, drain_timeout_s=self._drain_timeout_s)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
