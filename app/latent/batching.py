"""Adaptive batching: concurrent requests for a few images each become one model call.

Requests wait in a FIFO of images. One consumer task per model closes a batch as soon as a model-call slot is
free, taking up to `max_batch_size` queued images (with `max_delay_ms` > 0, not before that long after the oldest
waiting image arrived unless the batch is full), and runs the model on a worker thread (a small call that is the
service's only work runs on the loop's own thread, see `BatchingConfig.inline_lone_calls`). Requests that arrive
while every slot is busy queue up and go together in the next batch. Large requests are split across batches and
reassembled in order.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from app.server import tracing
from app.server.errors import DeadlineExceeded, ModelCallFailed, Overloaded, ServiceError, ShuttingDown
from app.serving.consumers import notify, wind_down

logger = logging.getLogger(__name__)

# When recent batches averaged fewer requests than this, a lone request is not held back waiting for
# company: at low concurrency the delay only adds latency, and under load batches fill while the model runs.
_ALONE_BELOW = 1.5
# Weight of the newest batch in the running estimates of call time and requests per batch: they follow load
# changes within a few batches without being thrown by a single slow call.
_NEWEST_WEIGHT = 0.2

# The fastest batch size on CPU in the serving benchmark; the service's settings default to these.
DEFAULT_MAX_BATCH_SIZE = 64
# No waiting for company while a model-call slot is free: batches grow by themselves while the model is busy.
# A delay only held back clients that take turns (2 to 8 clients of one image each got a third to three fifths of
# the rate with 5 ms, see docs/benchmarks.md, "Against what you would otherwise run") and gained nothing at 32.
DEFAULT_MAX_DELAY_MS = 0.0
DEFAULT_MAX_QUEUE_IMAGES = 1024
DEFAULT_MAX_CONCURRENT_BATCHES = 2
# The smallest share of the queue worth a model call of its own (`Batcher._take_batch`).
_MIN_SHARE_IMAGES = 4
# The largest lone call run on the event loop's thread (`BatchingConfig.inline_lone_calls`), and how long such calls
# may take by default (`BatchingConfig.inline_max_call_s`).
_INLINE_MAX_IMAGES = 4
_INLINE_MAX_CALL_S = 0.005

RunBatch = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class BatchReport:
    """One successful model call, as observers see it."""

    images: int  # real images; padding rows are not included
    requests: int
    padding: int
    queue_wait_s: list[float]  # per request slice
    model_call_s: float
    inputs: tuple[str, ...] = ()  # the batch's input names, sorted: what the model was asked to do


class BatchObserver(Protocol):
    """Receives batching metrics; implementations must be cheap, and their errors are only logged."""

    def on_batch(self, report: BatchReport) -> None:
        """One model call went through."""
        return None

    def on_reject(self, reason: str) -> None:
        """A request was refused (queue full, deadline, shutdown, ...)."""
        return None


class NullObserver(BatchObserver):
    """An observer that ignores everything; subclass it to override only the hooks you need."""


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are grouped into model calls."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    max_queue_images: int = DEFAULT_MAX_QUEUE_IMAGES
    allowed_batch_sizes: tuple[int, ...] = ()
    # Model calls that may run at once: a second call overlaps the first's Python work (slicing, copying out,
    # the next batch's assembly) with its matrix work, and on a GPU keeps the device fed.
    max_concurrent_batches: int = DEFAULT_MAX_CONCURRENT_BATCHES
    # Skip the delay for a lone request while recent batches held about one request each (low concurrency).
    adaptive_delay: bool = True
    # Share work that reaches idle call slots between them (see `Batcher._take_batch`): right on a CPU, where each
    # slot's call runs on cores of its own; on a GPU one fuller call costs about what a half one does.
    share_between_slots: bool = False
    # Run a call of at most _INLINE_MAX_IMAGES on the event loop's own thread when it is the only work (nothing else
    # queued or running for this model, and no other request in the service: the `alone` check the batcher is given)
    # and this model's calls that small have been taking at most _INLINE_MAX_CALL_S. It saves a lone request two
    # thread hand-offs, and nobody is waiting on the loop meanwhile. Right on a CPU, where the call's own thread does
    # its work; a GPU call would hold the loop while waiting on the device.
    inline_lone_calls: bool = False
    # The longest that this model's small calls may take (a running estimate) for one to run inline: whoever
    # arrives meanwhile waits that long for the loop.
    inline_max_call_s: float = _INLINE_MAX_CALL_S

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (1 disables batching), got {self.max_batch_size}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0 (0 never waits), got {self.max_delay_ms}")
        if self.max_queue_images < 1:
            raise ValueError(f"max_queue_images must be >= 1, got {self.max_queue_images}")
        if self.max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {self.max_concurrent_batches}")
        check_allowed_batch_sizes(self.allowed_batch_sizes, self.max_batch_size)


def check_allowed_batch_sizes(sizes: Sequence[int], max_batch_size: int) -> None:
    """Padding sizes must be positive, strictly increasing and end at the largest batch."""
    if sizes and (sizes[0] < 1 or list(sizes) != sorted(set(sizes))):
        raise ValueError(f"allowed_batch_sizes must be positive and strictly increasing, got {list(sizes)}")
    if sizes and sizes[-1] != max_batch_size:
        raise ValueError(
            f"allowed_batch_sizes must end with max_batch_size ({max_batch_size}), got {list(sizes)}"
        )


@dataclass
class BatcherStats:
    """Counters since start: `batches` and `images`/`padding` cover successful calls, `model_calls` all."""

    batches: int = 0
    model_calls: int = 0
    images: int = 0
    padding: int = 0


@dataclass(eq=False)
class _Request:
    inputs: dict[str, np.ndarray]
    size: int
    deadline: float | None
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0  # images already handed to batches
    outputs: dict[int, np.ndarray] = field(
        default_factory=dict
    )  # by first row: batches may finish out of order
    received: int = 0
    trace: tracing.Queued | None = None  # where its request's span is, when tracing is on

    @property
    def remaining(self) -> int:
        return self.size - self.taken


class _Slice(NamedTuple):
    request: _Request
    start: int
    stop: int

    def inputs(self) -> dict[str, np.ndarray]:
        return {name: array[self.start : self.stop] for name, array in self.request.inputs.items()}


def _leading_dim(inputs: dict[str, np.ndarray]) -> int:
    """The shared batch dimension k >= 1 of a request's arrays, or ValueError."""
    dims = {
        name: array.shape[0] if isinstance(array, np.ndarray) and array.ndim else 0
        for name, array in inputs.items()
    }
    if not dims or len(set(dims.values())) != 1 or 0 in dims.values():
        raise ValueError(f"inputs must be numpy arrays sharing a leading dimension k >= 1, got {dims}")
    return next(iter(dims.values()))


def _pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    missing = size - array.shape[0]
    if missing == 0:
        return array
    # Repeating a real row keeps padded inputs in-distribution, so they cannot trip the model.
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])


def _call_model(run_batch: RunBatch, parts: list[dict[str, np.ndarray]], batch_size: int) -> list[np.ndarray]:
    """Concatenate, pad, run and split back per part; runs on a worker thread to keep the loop free (or inline)."""
    inputs = {key: _pad_rows(np.concatenate([part[key] for part in parts]), batch_size) for key in parts[0]}
    outputs = np.asarray(run_batch(inputs))
    if outputs.ndim == 0 or outputs.shape[0] != batch_size:
        raise ValueError(f"model returned shape {outputs.shape} for a batch of {batch_size}")
    sizes = [next(iter(part.values())).shape[0] for part in parts]
    return np.split(outputs[: sum(sizes)], np.cumsum(sizes)[:-1])


class Batcher:
    """Groups concurrent `submit` calls for one model into batched calls of `run_batch`."""

    def __init__(
        self,
        run_batch: RunBatch,
        config: BatchingConfig,
        *,
        name: str = "model",
        observer: BatchObserver | None = None,
        executor: ThreadPoolExecutor | None = None,
        alone: Callable[[], bool] | None = None,
        trace_attributes: Mapping[str, tracing.AttributeValue] | None = None,
        unit: str = "images",
    ) -> None:
        """`alone` tells whether the service is serving no request but the caller's; without it, no call runs
        inline (see `BatchingConfig.inline_lone_calls`). `trace_attributes` go on its spans (model, version);
        `unit` names its rows in what it says (images, clips)."""
        self.name = name
        self.unit = unit
        self.config = config
        self.stats = BatcherStats()
        self._run_batch = run_batch
        self._observer: BatchObserver = observer or NullObserver()
        self._executor = executor
        self._owns_executor = executor is None
        self._alone = alone
        self._trace_attributes = dict(trace_attributes or {})
        self._traced = False  # whether any request came with a trace: until then batches skip tracing
        self._queue: deque[_Request] = deque()
        self._queued_images = 0
        self._in_flight: dict[int, list[_Slice]] = {}  # by batch number
        self._batch_numbers = itertools.count()
        self._running: set[asyncio.Future[list[np.ndarray]]] = set()
        # Since Python 3.10 asyncio primitives bind to the loop on first use, so this is safe before start().
        self._wakeup = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._closing = False
        self._drain = True
        self._requests_estimate = 1.0
        self._call_s_estimate = 0.0
        self._small_call_s_estimate: float | None = (
            None  # calls of at most _INLINE_MAX_IMAGES; None before one
        )

    @property
    def queued_images(self) -> int:
        return self._queued_images

    @property
    def in_flight_images(self) -> int:
        return sum(piece.stop - piece.start for piece in self._in_flight_slices())

    def pending(self) -> int:
        """Images queued or inside a model call."""
        return self._queued_images + self.in_flight_images

    def pending_description(self) -> str:
        return f"{self._queued_images} queued and {self.in_flight_images} in-flight images"

    @property
    def running(self) -> bool:
        return self._consumer is not None and not self._consumer.done() and not self._closing

    async def start(self) -> None:
        if self._consumer is not None or self._closing:
            raise RuntimeError(f"batcher {self.name!r} was already started or stopped; create a new one")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.max_concurrent_batches, thread_name_prefix=f"batcher-{self.name}"
            )
        self._consumer = asyncio.get_running_loop().create_task(self._consume(), name=f"batcher-{self.name}")

    async def submit(self, inputs: dict[str, np.ndarray], *, deadline: float | None = None) -> np.ndarray:
        """Queue `inputs` (k images) and return the model's k outputs in order."""
        size = _leading_dim(inputs)
        if self._closing:
            self._reject("shutdown")
            raise ShuttingDown()
        if self._consumer is None:
            raise RuntimeError(f"batcher {self.name!r} is not started; await start() first")
        if self._queued_images + size > self.config.max_queue_images:
            self._reject("overload")
            limit = self.config.max_queue_images
            message = (
                f"{self.name!r} has {self._queued_images} of {limit} {self.unit} queued; asked for {size}"
            )
            raise Overloaded(message, retry_after_s=self._retry_after_s())
        if deadline is not None and time.monotonic() >= deadline:
            self._reject("deadline")
            raise DeadlineExceeded("the request deadline passed before it was queued")
        request = _Request(
            inputs, size, deadline, asyncio.get_running_loop().create_future(), trace=tracing.queued()
        )
        self._traced = self._traced or request.trace is not None
        # A caller that gave up (deadline, disconnect) never reads its error; that is not worth a warning.
        request.future.add_done_callback(_mark_retrieved)
        self._queue.append(request)
        self._queued_images += size
        self._wakeup.set()
        return await self._await_result(request)

    async def stop(self, *, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Refuse new work, optionally finish queued work within `timeout_s`, and fail what is left."""
        self._closing = True
        self._drain = drain
        self._wakeup.set()
        await wind_down(self._consumer, drain=drain, timeout_s=timeout_s)
        self._fail_remaining(ShuttingDown, "shutdown")
        if self._owns_executor and self._executor is not None:
            # A model call still running cannot be interrupted; let its thread finish on its own.
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _await_result(self, request: _Request) -> np.ndarray:
        # The deadline is a timer that fails the request, so waiting is a plain await of its future: the
        # caller wakes in the loop turn after its images arrive.
        expiry = None
        if request.deadline is not None:
            delay_s = max(0.0, request.deadline - time.monotonic())
            expiry = asyncio.get_running_loop().call_later(delay_s, self._expire, request)
        try:
            return await request.future
        except asyncio.CancelledError:
            # The caller gave up (a disconnect): cancelling it cancelled the future it was waiting on.
            gave_up = request.future.cancelled() or not request.future.done()
            request.future.cancel()
            self._release(request)
            if gave_up:
                self._reject("disconnect")
            raise
        finally:
            if expiry is not None:
                expiry.cancel()

    def _expire(self, request: _Request) -> None:
        error = DeadlineExceeded("the request deadline passed before its images were generated")
        self._drop(request, error, "deadline")

    async def _consume(self) -> None:
        slots = asyncio.Semaphore(self.config.max_concurrent_batches)
        try:
            while True:
                # A batch closes only once a model call can start, so it keeps filling while all are busy.
                await slots.acquire()
                if not await self._wait_for_batch():
                    break
                self._start_run(self._take_batch(), slots)
            if self._running:
                await asyncio.wait(set(self._running))
        except Exception:
            logger.exception("batcher %r stopped unexpectedly", self.name)
            self._closing = True
            self._fail_remaining(lambda: ModelCallFailed("the batcher stopped unexpectedly"), None)

    async def _wait_for_batch(self) -> bool:
        """Wait until a batch should close; False once the consumer should exit."""
        while True:
            self._wakeup.clear()
            if self._closing and not self._drain:
                return False
            head = self._live_head()
            if head is None:
                if self._closing:
                    return False
                await self._wakeup.wait()
                continue
            # Timing from the head's arrival means time spent behind a busy model counts toward the delay.
            delay_s = head.arrived + self.config.max_delay_ms / 1000 - time.monotonic()
            if (
                self._closing
                or delay_s <= 0
                or self._queued_images >= self.config.max_batch_size
                or (self.config.adaptive_delay and self._requests_estimate < _ALONE_BELOW)
            ):
                return True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay_s)

    def _live_head(self) -> _Request | None:
        """The oldest request with images still to send, dropping finished and expired ones on the way."""
        now = time.monotonic()
        while self._queue:
            request = self._queue[0]
            if request.future.done() or request.remaining == 0:
                self._queue.popleft()
            elif request.deadline is not None and now >= request.deadline:
                self._queue.popleft()
                self._drop(request, DeadlineExceeded("the request deadline passed while queued"), "deadline")
            else:
                return request
        return None

    def _take_batch(self) -> list[_Slice]:
        """Take up to max_batch_size images greedily; a request that does not fit leaves its rest queued.

        With `share_between_slots` (and no fixed batch sizes to pad to), a batch takes only its share of the queue
        when other slots are free too and each share holds at least _MIN_SHARE_IMAGES: the queued images divided
        between the free slots, so that work reaching an idle model runs on every slot at once instead of in one
        call while the other slots wait.
        """
        slices: list[_Slice] = []
        room = self.config.max_batch_size
        free_slots = self.config.max_concurrent_batches - len(self._in_flight)
        if (
            self.config.share_between_slots
            and not self.config.allowed_batch_sizes
            and free_slots > 1
            and self._queued_images >= free_slots * _MIN_SHARE_IMAGES
        ):
            room = min(room, -(-self._queued_images // free_slots))
        while room > 0 and (request := self._live_head()) is not None:
            if slices and request.inputs.keys() != slices[0].request.inputs.keys():
                break  # different inputs (e.g. labels vs label embeddings) go to the model in separate calls
            take = min(room, request.remaining)
            slices.append(_Slice(request, request.taken, request.taken + take))
            request.taken += take
            self._queued_images -= take
            room -= take
        return slices

    def _start_run(self, slices: list[_Slice], slots: asyncio.Semaphore) -> None:
        """Hand a batch to the model's thread; its results are delivered from a callback, so a model call costs
        no task of its own and starts in the loop turn its batch closed in."""
        if not slices:
            slots.release()
            return
        images = sum(piece.stop - piece.start for piece in slices)
        batch_size = self._padded_size(images)
        number = next(self._batch_numbers)
        self._in_flight[number] = slices
        self.stats.model_calls += 1
        call = functools.partial(
            _call_model, self._run_batch, [piece.inputs() for piece in slices], batch_size
        )
        batch_trace = self._trace_batch(slices, images, batch_size) if self._traced else None
        if batch_trace is not None:
            call = functools.partial(batch_trace.call, call)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        if self._runs_inline(images):
            running: asyncio.Future[list[np.ndarray]] = loop.create_future()
            try:
                running.set_result(call())
            except Exception as error:
                running.set_exception(error)
        else:
            try:
                running = loop.run_in_executor(self._executor, call)
            except RuntimeError as error:  # the executor was shut down: this batch fails, the batcher goes on
                slots.release()
                self._in_flight.pop(number, None)
                if batch_trace is not None:
                    batch_trace.end(error)
                self._fail_batch(slices, images, error)
                return
        self._running.add(running)

        def finished(done: asyncio.Future[list[np.ndarray]]) -> None:
            self._running.discard(done)
            slots.release()
            self._in_flight.pop(number, None)
            if batch_trace is not None:
                batch_trace.end(None if done.cancelled() else done.exception())
            self._finish(slices, done, images, batch_size - images, started)

        running.add_done_callback(finished)

    def _trace_batch(self, slices: list[_Slice], images: int, batch_size: int) -> tracing.BatchTrace | None:
        """The spans of a batch whose requests are traced: its own, and each request's wait in the queue."""
        requests = [(piece.request.trace, piece.request.size) for piece in slices]
        return tracing.start_batch(
            requests, self._trace_attributes, images=images, batch_size=batch_size, requests=len(slices)
        )

    def _runs_inline(self, images: int) -> bool:
        """Whether a batch of `images` just put in flight is the only work, and small and quick enough (by the
        calls measured so far) to run on the loop."""
        return (
            self.config.inline_lone_calls
            and images <= _INLINE_MAX_IMAGES
            and self._small_call_s_estimate is not None
            and self._small_call_s_estimate <= self.config.inline_max_call_s
            and len(self._in_flight) == 1
            and self._queued_images == 0
            and self._alone is not None
            and self._alone()
        )

    def _in_flight_slices(self) -> list[_Slice]:
        return [piece for slices in self._in_flight.values() for piece in slices]

    def _finish(
        self,
        slices: list[_Slice],
        done: asyncio.Future[list[np.ndarray]],
        images: int,
        padding: int,
        started: float,
    ) -> None:
        error = None if done.cancelled() else done.exception()
        if done.cancelled() or error is not None:
            self._fail_batch(slices, images, error)
            return
        self._record(slices, images, padding, started, time.monotonic() - started)
        for piece, output in zip(slices, done.result(), strict=True):
            self._deliver(piece, output)

    def _fail_batch(self, slices: list[_Slice], images: int, error: BaseException | None) -> None:
        """A model call that failed fails exactly the requests it carried, logged once."""
        logger.error("model call for %r failed (batch of %d images)", self.name, images, exc_info=error)
        for piece in slices:
            self._drop(piece.request, ModelCallFailed(f"the model call for {self.name!r} failed"), None)

    def _deliver(self, piece: _Slice, output: np.ndarray) -> None:
        request = piece.request
        if request.future.done():
            return  # the caller gave up; its rows were computed but nobody wants them
        request.outputs[piece.start] = output
        request.received += output.shape[0]
        if request.received == request.size:
            outputs = [request.outputs[start] for start in sorted(request.outputs)]
            request.future.set_result(outputs[0] if len(outputs) == 1 else np.concatenate(outputs))

    def _drop(self, request: _Request, error: ServiceError, reason: str | None) -> None:
        """Finish a request early; its unsent images leave the queue and never reach the model."""
        if request.future.done():
            return
        self._release(request)
        request.future.set_exception(error)
        if reason is not None:
            self._reject(reason)

    def _release(self, request: _Request) -> None:
        """Take a request's unsent images out of the queue."""
        if request.remaining:
            self._queued_images -= request.remaining
            request.taken = request.size
            with contextlib.suppress(ValueError):
                self._queue.remove(request)

    def _fail_remaining(self, make_error: Callable[[], ServiceError], reason: str | None) -> None:
        for request in [piece.request for piece in self._in_flight_slices()] + list(self._queue):
            self._drop(request, make_error(), reason)
        self._in_flight = {}
        self._queue.clear()

    def _padded_size(self, images: int) -> int:
        sizes = self.config.allowed_batch_sizes
        return sizes[bisect.bisect_left(sizes, images)] if sizes else images

    def _retry_after_s(self) -> int:
        batches_ahead = math.ceil((self._queued_images + self.in_flight_images) / self.config.max_batch_size)
        seconds_per_batch = self._call_s_estimate + self.config.max_delay_ms / 1000
        return max(1, math.ceil(batches_ahead * seconds_per_batch))

    def _record(self, slices: list[_Slice], images: int, padding: int, started: float, call_s: float) -> None:
        self.stats.batches += 1
        self.stats.images += images
        self.stats.padding += padding
        previous = self._call_s_estimate or call_s
        self._call_s_estimate = _moving_average(previous, call_s)
        if images <= _INLINE_MAX_IMAGES:
            small = self._small_call_s_estimate
            self._small_call_s_estimate = call_s if small is None else _moving_average(small, call_s)
        self._requests_estimate = _moving_average(self._requests_estimate, len(slices))
        waits = [started - piece.request.arrived for piece in slices]
        inputs = tuple(sorted(slices[0].request.inputs))
        report = BatchReport(images, len(slices), padding, waits, call_s, inputs)
        self._notify(lambda: self._observer.on_batch(report))

    def _reject(self, reason: str) -> None:
        self._notify(lambda: self._observer.on_reject(reason))

    def _notify(self, hook: Callable[[], None]) -> None:
        notify(hook, self.name)


def _moving_average(previous: float, latest: float) -> float:
    """Exponential moving average: the newest observation weighs _NEWEST_WEIGHT, older ones fade geometrically."""
    return (1.0 - _NEWEST_WEIGHT) * previous + _NEWEST_WEIGHT * latest


def _mark_retrieved(future: asyncio.Future[np.ndarray]) -> None:
    if not future.cancelled():
        future.exception()
