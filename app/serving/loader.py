"""Loading a version (SavedModel, warm-up, batcher) within a deadline, and unloading it once its work has
finished."""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import anyio

from app.metrics import Metrics
from app.serving import heap
from app.serving.registry import ModelVersion, VersionStatus
from app.serving.runtime import DeviceInfo, ModelLoadError
from app.serving.servable import ModelKinds, Servable

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")

# Longest load-failure reason that /models and 503s show; the log has the whole error.
_MAX_REASON_CHARS = 300
# An absolute path of two or more components, as file-system errors quote them.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/:]+/)+([^\s'\"/:]*)")


class ModelLoader:
    """Turns a ModelVersion into a serving one, or marks it failed with the reason; never raises.

    A load runs on a daemon thread and is waited for at most `load_timeout_s`: past it the version is marked
    failed and the next load goes ahead. The thread may be stuck in a read nothing can interrupt (storage that
    stopped answering); as a daemon it cannot keep the process alive at exit, and its version is not loaded
    again until it has returned, so a version never holds more than one such thread.
    """

    def __init__(self, kinds: ModelKinds, metrics: Metrics, *, load_timeout_s: float) -> None:
        if load_timeout_s <= 0:
            raise ValueError(f"load_timeout_s must be positive, got {load_timeout_s}")
        self._kinds = kinds
        self._metrics = metrics
        self._load_timeout_s = load_timeout_s
        # One load at a time: loads compete with serving for the same cores.
        self._lock = anyio.Lock()
        # Loads given up at their deadline whose threads are still running, by version.
        self._abandoned: dict[tuple[str, int], threading.Thread] = {}

    async def load(self, model_version: ModelVersion, device: DeviceInfo) -> bool:
        async with self._lock:
            return await self._load(model_version, device)

    async def _load(self, model_version: ModelVersion, device: DeviceInfo) -> bool:
        model_version.status = VersionStatus.LOADING
        started = time.perf_counter()
        try:
            servable = await self._load_in_time(model_version, device)
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

    async def _load_in_time(self, model_version: ModelVersion, device: DeviceInfo) -> Servable:
        """The version loaded and warmed up on its own daemon thread, or ModelLoadError past the deadline."""
        key = (model_version.name, model_version.version)
        self._abandoned = {k: thread for k, thread in self._abandoned.items() if thread.is_alive()}
        if key in self._abandoned:
            raise ModelLoadError(
                f"its previous load, given up after {self._load_timeout_s:g} s, has not returned yet"
            )
        name = f"genserve-load-{model_version.name}-{model_version.version}"
        thread, result = start_daemon_thread(lambda: self._kinds.load(model_version.path, device), name)
        waiter = asyncio.wrap_future(result)
        try:
            await asyncio.wait({waiter}, timeout=self._load_timeout_s)
        finally:
            finished = result.done()
            if not finished:  # past the deadline, or the service is stopping
                waiter.cancel()
                self._abandon(key, thread, result)
        if not finished:  # past the deadline (a stopping service's cancellation has left above)
            _running_loads.discard(thread)  # likely stuck: exit does not wait for it
            raise ModelLoadError(f"loading took longer than its deadline of {self._load_timeout_s:g} s")
        return result.result()

    def _abandon(self, key: tuple[str, int], thread: threading.Thread, result: Future[Servable]) -> None:
        self._abandoned[key] = thread
        # Whatever it loads is dropped; the version loads again at its next attempt.
        result.add_done_callback(
            lambda _: logger.info("the given-up load of %s version %d has returned", *key)
        )

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


def start_daemon_thread(
    function: Callable[[], _Result], name: str
) -> tuple[threading.Thread, Future[_Result]]:
    """Run `function` on a new daemon thread: one that may stay blocked without keeping the process alive at
    exit, as a thread of a ThreadPoolExecutor or of anyio would (both are joined when the interpreter exits)."""
    result: Future[_Result] = Future()

    def run() -> None:
        if not result.set_running_or_notify_cancel():
            return
        try:
            value = function()
        except BaseException as error:  # handed to the waiter, as an executor would
            result.set_exception(error)
        else:
            result.set_result(value)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    _running_loads.add(thread)
    result.add_done_callback(lambda _: _running_loads.discard(thread))
    return thread, result


# Load threads still running, but for those given up at their deadline. At exit they get up to `EXIT_WAIT_S` (all
# together) to finish: a daemon thread still inside TensorFlow while the interpreter shuts down can abort the
# process (a SIGTERM in the middle of a load).
EXIT_WAIT_S = 30.0
_running_loads: set[threading.Thread] = set()


@atexit.register
def _let_loads_finish() -> None:
    deadline = time.monotonic() + EXIT_WAIT_S
    for thread in list(_running_loads):
        thread.join(max(0.0, deadline - time.monotonic()))
