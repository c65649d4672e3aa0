"""Batcher behaviour against a fake model whose output is derived from its input."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from app.image.kind import ImageKind
from app.image.runtime import ImageRuntime
from app.latent.batching import Batcher, BatchingConfig, BatchReport, NullObserver
from app.metrics import Metrics
from app.server.errors import DeadlineExceeded, ModelCallFailed, Overloaded, ShuttingDown
from app.serving.runtime import DeviceInfo
from tests.conftest import make_settings

WAIT_S = 30.0  # upper bound for anything that should happen "soon"; only reached when a test fails


class FakeModel:
    """Doubles the first column of `z`, records what it saw, and can be held busy or made to fail."""

    def __init__(self, *, hold: bool = False, fail_calls: frozenset[int] = frozenset()) -> None:
        self.batch_sizes: list[int] = []
        self.seen: list[float] = []
        self.fail_calls = fail_calls
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        z = inputs["z"]
        with self._lock:
            call_index = len(self.batch_sizes)
            self.batch_sizes.append(len(z))
            self.seen.extend(z[:, 0].tolist())
        self.entered.set()
        self.release.wait(WAIT_S)
        if call_index in self.fail_calls:
            raise RuntimeError(f"fake failure in call {call_index}")
        return z[:, 0] * 2

    async def wait_entered(self) -> None:
        if not await asyncio.to_thread(self.entered.wait, WAIT_S):
            raise TimeoutError("the fake model was never called")


class RecordingObserver(NullObserver):
    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.rejects: list[str] = []

    def on_batch(self, report: BatchReport) -> None:
        self.batches.append({"images": report.images, "requests": report.requests, "padding": report.padding})

    def on_reject(self, reason: str) -> None:
        self.rejects.append(reason)


class BrokenObserver(NullObserver):
    def on_batch(self, report: BatchReport) -> None:
        raise RuntimeError("observer bug")


def latents(*values: float) -> dict[str, np.ndarray]:
    """A request whose images are identified by the first latent coordinate."""
    z = np.zeros((len(values), 3), dtype=np.float64)
    z[:, 0] = values
    return {"z": z}


def doubled(*values: float) -> list[float]:
    return [2 * value for value in values]


@asynccontextmanager
async def started(
    model: FakeModel, observer: RecordingObserver | None = None, **config: Any
) -> AsyncIterator[Batcher]:
    # Most tests pin the fixed-delay behaviour and one model call at a time; the adaptive delay and overlapping
    # calls have tests of their own.
    config.setdefault("adaptive_delay", False)
    config.setdefault("max_concurrent_batches", 1)
    batcher = Batcher(model, BatchingConfig(**config), name="fake", observer=observer)
    await batcher.start()
    try:
        yield batcher
    finally:
        model.release.set()
        await batcher.stop(drain=False, timeout_s=WAIT_S)


async def wait_until_queued(batcher: Batcher, images: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while batcher.queued_images != images:
        if time.monotonic() > deadline:
            raise TimeoutError(f"expected {images} queued images, have {batcher.queued_images}")
        await asyncio.sleep(0.001)


@asynccontextmanager
async def held_call(
    model: FakeModel, observer: RecordingObserver | None = None, **config: Any
) -> AsyncIterator[tuple[Batcher, asyncio.Task[np.ndarray]]]:
    """A started batcher whose first model call (of `latents(0)`) is in progress, held until `model.release`."""
    async with started(model, observer, **config) as batcher:
        first = asyncio.create_task(batcher.submit(latents(0)))
        await model.wait_entered()
        yield batcher, first


def test_concurrent_submits_each_get_their_own_outputs_in_order() -> None:
    async def scenario() -> None:
        model = FakeModel()
        requests = [tuple(float(10 * i + j) for j in range(1 + i % 3)) for i in range(10)]
        async with started(model, max_batch_size=4, max_delay_ms=20) as batcher:
            results = await asyncio.gather(*(batcher.submit(latents(*values)) for values in requests))
        for values, result in zip(requests, results, strict=True):
            assert result.tolist() == doubled(*values)

    asyncio.run(scenario())


def test_concurrent_small_requests_share_one_model_call() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        async with held_call(model, max_batch_size=16, max_delay_ms=50) as (batcher, warmup):
            tasks = [asyncio.create_task(batcher.submit(latents(i, i + 0.5))) for i in range(1, 9)]
            await wait_until_queued(batcher, 16)
            model.release.set()
            results = await asyncio.gather(warmup, *tasks)
        assert model.batch_sizes == [1, 16]
        assert [result.tolist() for result in results[1:]] == [doubled(i, i + 0.5) for i in range(1, 9)]
        assert batcher.stats.batches == 2
        assert batcher.stats.images == 17

    asyncio.run(scenario())


def test_requests_with_different_inputs_go_to_separate_model_calls_in_order() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        with_labels = {**latents(2), "label": np.array([1])}
        with_embeddings = {**latents(3), "label_embedding": np.zeros((1, 4))}
        async with held_call(model, max_batch_size=16, max_delay_ms=50) as (batcher, warmup):
            tasks = [
                asyncio.create_task(batcher.submit(inputs))
                for inputs in (with_labels, {**latents(2.5), "label": np.array([0])}, with_embeddings)
            ]
            await wait_until_queued(batcher, 3)
            model.release.set()
            results = await asyncio.gather(warmup, *tasks)
        assert model.batch_sizes == [1, 2, 1]
        assert [result.tolist() for result in results] == [doubled(0), doubled(2), doubled(2.5), doubled(3)]

    asyncio.run(scenario())


def test_partial_batch_is_flushed_after_max_delay() -> None:
    async def scenario() -> None:
        model = FakeModel()
        async with started(model, max_batch_size=32, max_delay_ms=100) as batcher:
            began = time.monotonic()
            # Nothing else fills the batch: only the deadline can send it, so an answer at all is the flush.
            result = await asyncio.wait_for(batcher.submit(latents(1, 2, 3)), WAIT_S)
            elapsed = time.monotonic() - began
        assert result.tolist() == doubled(1, 2, 3)
        assert model.batch_sizes == [3]
        assert elapsed >= 0.09

    asyncio.run(scenario())


def test_full_batch_does_not_wait_for_max_delay() -> None:
    async def scenario() -> None:
        model = FakeModel()
        async with started(model, max_batch_size=4, max_delay_ms=60_000) as batcher:
            result = await asyncio.wait_for(batcher.submit(latents(1, 2, 3, 4)), WAIT_S)
        assert result.tolist() == doubled(1, 2, 3, 4)
        assert model.batch_sizes == [4]

    asyncio.run(scenario())


def test_large_request_is_split_across_calls_and_reassembled_in_order() -> None:
    async def scenario() -> None:
        model = FakeModel()
        large = tuple(float(i) for i in range(10))
        async with started(model, max_batch_size=4, max_delay_ms=20) as batcher:
            big, small = await asyncio.gather(
                batcher.submit(latents(*large)), batcher.submit(latents(97, 98, 99))
            )
        assert big.tolist() == doubled(*large)
        assert small.tolist() == doubled(97, 98, 99)
        # The rest of the large request stays at the head, and the small one fills the gap after it.
        assert model.batch_sizes == [4, 4, 4, 1]
        assert model.seen == [*large, 97, 98, 99]

    asyncio.run(scenario())


def test_batches_are_padded_to_allowed_sizes_and_padding_is_not_returned() -> None:
    async def scenario() -> None:
        model = FakeModel()
        observer = RecordingObserver()
        config = {"max_batch_size": 8, "max_delay_ms": 0, "allowed_batch_sizes": (2, 4, 8)}
        async with started(model, observer, **config) as batcher:
            result = await batcher.submit(latents(1, 2, 3))
        assert result.tolist() == doubled(1, 2, 3)
        assert model.batch_sizes == [4]
        assert model.seen == [1, 2, 3, 3]  # the last row is repeated
        assert batcher.stats.padding == 1
        assert observer.batches == [{"images": 3, "requests": 1, "padding": 1}]

    asyncio.run(scenario())


def test_model_failure_reaches_exactly_its_batch_and_later_batches_succeed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True, fail_calls=frozenset({0}))
        async with started(model, max_batch_size=8, max_delay_ms=20) as batcher:
            failing = [asyncio.create_task(batcher.submit(latents(i))) for i in (1, 2)]
            await model.wait_entered()
            later = asyncio.create_task(batcher.submit(latents(3)))
            await wait_until_queued(batcher, 1)
            model.release.set()
            outcomes = await asyncio.gather(*failing, later, return_exceptions=True)
        assert [type(outcome) for outcome in outcomes[:2]] == [ModelCallFailed, ModelCallFailed]
        assert isinstance(outcomes[2], np.ndarray)
        assert outcomes[2].tolist() == doubled(3)
        assert model.batch_sizes == [2, 1]
        assert batcher.stats.model_calls == 2
        assert batcher.stats.batches == 1

    with caplog.at_level(logging.ERROR, logger="app.latent.batching"):
        asyncio.run(scenario())
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 1


def test_a_shut_down_executor_fails_the_batch_and_the_batcher_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        executor = ThreadPoolExecutor(max_workers=1)
        batcher = Batcher(FakeModel(), BatchingConfig(max_delay_ms=0), name="fake", executor=executor)
        await batcher.start()
        executor.shutdown()
        try:
            with pytest.raises(ModelCallFailed):
                await batcher.submit(latents(1), deadline=time.monotonic() + WAIT_S)
            with pytest.raises(ModelCallFailed):
                await batcher.submit(latents(2), deadline=time.monotonic() + WAIT_S)
            assert batcher.running and batcher.queued_images == 0 and batcher.in_flight_images == 0
        finally:
            await batcher.stop(drain=False, timeout_s=WAIT_S)

    with caplog.at_level(logging.ERROR, logger="app.latent.batching"):
        asyncio.run(scenario())
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 2


def test_wrong_output_leading_dim_fails_the_batch() -> None:
    async def scenario() -> None:
        def truncating_model(inputs: dict[str, np.ndarray]) -> np.ndarray:
            return inputs["z"][:-1, 0]

        batcher = Batcher(truncating_model, BatchingConfig(max_batch_size=4, max_delay_ms=0))
        await batcher.start()
        with pytest.raises(ModelCallFailed):
            await batcher.submit(latents(1, 2))
        await batcher.stop()

    asyncio.run(scenario())


def test_full_queue_rejects_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        observer = RecordingObserver()
        async with held_call(model, observer, max_batch_size=2, max_queue_images=4) as (batcher, in_flight):
            queued = asyncio.create_task(batcher.submit(latents(1, 2, 3)))
            await wait_until_queued(batcher, 3)
            with pytest.raises(Overloaded) as rejected:
                await batcher.submit(latents(4, 5))
            model.release.set()
            await asyncio.gather(in_flight, queued)
        assert rejected.value.retry_after_s >= 1
        assert rejected.value.headers["Retry-After"] == str(rejected.value.retry_after_s)
        assert observer.rejects == ["overload"]
        assert 4 not in model.seen

    asyncio.run(scenario())


def test_expired_deadline_raises_and_its_rows_never_reach_the_model() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        observer = RecordingObserver()
        async with held_call(model, observer, max_batch_size=4, max_delay_ms=0) as (batcher, busy):
            with pytest.raises(DeadlineExceeded):
                await batcher.submit(latents(100, 101), deadline=time.monotonic() + 0.05)
            with pytest.raises(DeadlineExceeded):
                await batcher.submit(latents(200), deadline=time.monotonic() - 1)
            assert batcher.queued_images == 0
            model.release.set()
            await busy
            after = await batcher.submit(latents(5))
        assert after.tolist() == doubled(5)
        assert model.seen == [0, 5]
        assert observer.rejects == ["deadline", "deadline"]

    asyncio.run(scenario())


def test_cancelled_submit_never_reaches_the_model() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        observer = RecordingObserver()
        async with held_call(model, observer, max_batch_size=4, max_delay_ms=0) as (batcher, busy):
            abandoned = asyncio.create_task(batcher.submit(latents(300, 301)))
            await wait_until_queued(batcher, 2)
            abandoned.cancel()
            with pytest.raises(asyncio.CancelledError):
                await abandoned
            assert batcher.queued_images == 0
            model.release.set()
            await busy
            after = await batcher.submit(latents(6))
        assert after.tolist() == doubled(6)
        assert model.seen == [0, 6]
        assert observer.rejects == ["disconnect"]

    asyncio.run(scenario())


def test_max_batch_size_one_makes_one_call_per_image() -> None:
    async def scenario() -> None:
        model = FakeModel()
        async with started(model, max_batch_size=1, max_delay_ms=50) as batcher:
            results = await asyncio.gather(*(batcher.submit(latents(i, i + 0.5)) for i in range(3)))
        assert [result.tolist() for result in results] == [doubled(i, i + 0.5) for i in range(3)]
        assert model.batch_sizes == [1] * 6

    asyncio.run(scenario())


def test_stop_with_drain_finishes_queued_work_then_refuses_new_submits() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        observer = RecordingObserver()
        batcher = Batcher(model, BatchingConfig(max_batch_size=2, max_delay_ms=60_000), observer=observer)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(latents(i))) for i in range(5)]
        await model.wait_entered()
        stopping = asyncio.create_task(batcher.stop(drain=True, timeout_s=WAIT_S))
        await asyncio.sleep(0.01)
        assert not batcher.running
        with pytest.raises(ShuttingDown):
            await batcher.submit(latents(9))
        model.release.set()
        results = await asyncio.gather(*tasks)
        await stopping
        assert [result.tolist() for result in results] == [doubled(i) for i in range(5)]
        assert model.batch_sizes == [2, 2, 1]
        assert observer.rejects == ["shutdown"]

    asyncio.run(scenario())


def test_stop_without_drain_fails_queued_and_in_flight_work() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        batcher = Batcher(model, BatchingConfig(max_batch_size=1, max_delay_ms=0, max_concurrent_batches=1))
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(latents(i))) for i in range(3)]
        await model.wait_entered()
        await batcher.stop(drain=False)
        model.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert [type(outcome) for outcome in outcomes] == [ShuttingDown] * 3
        assert model.seen == [0]

    asyncio.run(scenario())


def test_observer_errors_do_not_break_serving() -> None:
    async def scenario() -> None:
        batcher = Batcher(FakeModel(), BatchingConfig(max_delay_ms=0), observer=BrokenObserver())
        await batcher.start()
        result = await batcher.submit(latents(1, 2))
        await batcher.stop()
        assert result.tolist() == doubled(1, 2)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"z": np.zeros((0, 3))},
        {"z": np.zeros((2, 3)), "labels": np.zeros((3,))},
        {"z": np.float64(1.0)},
    ],
    ids=["empty", "zero-images", "mismatched-leading-dims", "scalar"],
)
def test_invalid_inputs_raise_value_error(inputs: dict[str, np.ndarray]) -> None:
    async def scenario() -> None:
        model = FakeModel()
        async with started(model) as batcher:
            with pytest.raises(ValueError):
                await batcher.submit(inputs)
        assert model.batch_sizes == []

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "config",
    [
        {"max_batch_size": 0},
        {"max_delay_ms": -1},
        {"max_queue_images": 0},
        {"max_batch_size": 8, "allowed_batch_sizes": (2, 4)},
        {"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)},
        {"max_batch_size": 8, "allowed_batch_sizes": (0, 8)},
    ],
)
def test_invalid_config_raises_value_error(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BatchingConfig(**config)


def test_valid_config_with_allowed_sizes_is_accepted() -> None:
    config = BatchingConfig(max_batch_size=8, allowed_batch_sizes=(1, 2, 4, 8))
    assert config.allowed_batch_sizes[-1] == config.max_batch_size


def test_by_default_a_batch_starts_in_the_loop_turns_after_its_request_while_a_slot_is_free() -> None:
    """Requests that shared batches a moment ago do not make a lone one wait for company (no default delay)."""

    async def scenario() -> None:
        model = FakeModel()
        batcher = Batcher(model, BatchingConfig(), name="fake")
        await batcher.start()
        try:
            for _ in range(4):
                await asyncio.gather(*(batcher.submit(latents(i)) for i in range(8)))
            calls = batcher.stats.model_calls
            lone = asyncio.create_task(batcher.submit(latents(1)))
            for _ in range(5):
                await asyncio.sleep(0)
            assert batcher.stats.model_calls == calls + 1
            assert (await lone).tolist() == doubled(1)
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_adaptive_delay_does_not_hold_back_a_lone_request() -> None:
    async def scenario() -> None:
        model = FakeModel()
        async with started(model, max_batch_size=32, max_delay_ms=120_000, adaptive_delay=True) as batcher:
            began = time.monotonic()
            result = await batcher.submit(latents(1))
            # Far below the two-minute delay that a batch waiting for company would take, on any machine.
            assert time.monotonic() - began < 60
            assert result.tolist() == doubled(1)

    asyncio.run(scenario())


def test_adaptive_delay_waits_again_once_requests_share_batches() -> None:
    async def scenario() -> None:
        model = FakeModel()
        async with started(model, max_batch_size=64, max_delay_ms=150, adaptive_delay=True) as batcher:
            for _ in range(4):
                await asyncio.gather(*(batcher.submit(latents(i)) for i in range(8)))
            began = time.monotonic()
            await batcher.submit(latents(1))
            assert time.monotonic() - began >= 0.14

    asyncio.run(scenario())


class GatedModel:
    """A model whose calls each wait for their own release, so tests decide the order in which they finish."""

    def __init__(self) -> None:
        self.gates: list[threading.Event] = []
        self.sizes: list[int] = []
        self._lock = threading.Lock()
        self.running = 0
        self.most_running = 0

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        gate = threading.Event()
        with self._lock:
            self.gates.append(gate)
            self.sizes.append(len(inputs["z"]))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        gate.wait(WAIT_S)
        with self._lock:
            self.running -= 1
        return inputs["z"][:, 0] * 2

    async def wait_calls(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.gates) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} model calls, saw {len(self.gates)}")
            await asyncio.sleep(0.001)


def test_two_model_calls_overlap_and_a_request_split_across_them_is_reassembled_in_order() -> None:
    async def scenario() -> None:
        model = GatedModel()
        config = BatchingConfig(
            max_batch_size=4, max_delay_ms=0, max_concurrent_batches=2, adaptive_delay=False
        )
        batcher = Batcher(model, config, name="gated")
        await batcher.start()
        try:
            # Six images: rows 0-3 go to the first call, rows 4-5 to the second, which is released first.
            request = asyncio.create_task(batcher.submit(latents(0, 1, 2, 3, 4, 5)))
            await model.wait_calls(2)
            assert model.sizes == [4, 2] and batcher.in_flight_images == 6
            model.gates[1].set()
            await asyncio.sleep(0.05)
            assert not request.done()
            model.gates[0].set()
            assert (await request).tolist() == doubled(0, 1, 2, 3, 4, 5)
            assert model.most_running == 2
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_no_more_calls_run_at_once_than_allowed() -> None:
    async def scenario() -> None:
        model = GatedModel()
        config = BatchingConfig(
            max_batch_size=1, max_delay_ms=0, max_concurrent_batches=2, adaptive_delay=False
        )
        batcher = Batcher(model, config, name="gated")
        await batcher.start()
        try:
            requests = [asyncio.create_task(batcher.submit(latents(value))) for value in range(5)]
            await model.wait_calls(2)
            await asyncio.sleep(0.05)
            assert len(model.gates) == 2 and batcher.queued_images == 3
            for _ in range(5):
                await model.wait_calls(min(len(model.gates) + 1, 5)) if len(model.gates) < 5 else None
                for gate in model.gates:
                    gate.set()
            results = await asyncio.gather(*requests)
            assert [result.tolist() for result in results] == [doubled(value) for value in range(5)]
            assert model.most_running == 2
        finally:
            await batcher.stop()

    asyncio.run(scenario())


async def calls_for_ten_then_ten(config: BatchingConfig) -> list[int]:
    """The model-call sizes for ten one-image requests reaching an idle model in one loop turn, then ten more
    queued while the first call still runs and the second has finished."""
    model = GatedModel()
    batcher = Batcher(model, config, name="gated")
    await batcher.start()
    try:
        first = [asyncio.create_task(batcher.submit(latents(value))) for value in range(10)]
        await model.wait_calls(2)
        later = [asyncio.create_task(batcher.submit(latents(value))) for value in range(10, 20)]
        await wait_until_queued(batcher, 10)
        model.gates[1].set()
        await model.wait_calls(3)
        while not all(task.done() for task in first + later):
            for gate in model.gates:
                gate.set()
            await asyncio.sleep(0.01)
        results = await asyncio.gather(*first, *later)
        assert [result.tolist() for result in results] == [doubled(value) for value in range(20)]
        return model.sizes
    finally:
        for gate in model.gates:
            gate.set()
        await batcher.stop()


def sharing(**overrides: Any) -> BatchingConfig:
    values: dict[str, Any] = {
        "max_batch_size": 8,
        "max_delay_ms": 0,
        "max_concurrent_batches": 2,
        "adaptive_delay": False,
        "share_between_slots": True,
        **overrides,
    }
    return BatchingConfig(**values)


def test_work_reaching_idle_slots_is_shared_between_them_and_one_free_slot_takes_all_it_can() -> None:
    # Five and five, not eight and two; the slot freed while the other call runs takes a whole batch.
    assert asyncio.run(calls_for_ten_then_ten(sharing()))[:3] == [5, 5, 8]


@pytest.mark.parametrize(
    ("config", "sizes"),
    [(sharing(share_between_slots=False), [8, 2, 8]), (sharing(allowed_batch_sizes=(4, 8)), [8, 4, 8])],
    ids=["off (GPU)", "fixed batch sizes (two images padded to four)"],
)
def test_without_sharing_a_batch_takes_all_it_can(config: BatchingConfig, sizes: list[int]) -> None:
    assert asyncio.run(calls_for_ten_then_ten(config))[:3] == sizes


def test_a_share_below_the_smallest_worth_a_call_is_not_split() -> None:
    async def scenario() -> list[int]:
        model = GatedModel()
        batcher = Batcher(model, sharing(), name="gated")
        await batcher.start()
        try:
            requests = [asyncio.create_task(batcher.submit(latents(value))) for value in range(7)]
            await model.wait_calls(1)
            for gate in model.gates:
                gate.set()
            await asyncio.gather(*requests)
            return model.sizes
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [7]


@pytest.mark.parametrize(("kind", "on_cpu"), [("CPU", True), ("GPU", False)])
def test_the_service_shares_work_between_slots_and_runs_lone_calls_inline_on_a_cpu_only(
    tiny_store: Path, kind: str, on_cpu: bool
) -> None:
    runtime = SimpleNamespace(device=DeviceInfo(name=f"/{kind}:0", kind=kind), run=ThreadRecordingModel())
    metrics = Metrics()
    image_kind = ImageKind(make_settings(tiny_store), metrics, cast(Any, None), cast(Any, None))
    batcher = image_kind.batcher("fake", 1, cast(ImageRuntime, runtime))
    # The service's 5 ms bound on inline calls is for real models; a loaded machine can take longer over the fake.
    batcher.config = dataclasses.replace(batcher.config, inline_max_call_s=QUICK_CALL_S)
    assert batcher.config.share_between_slots is on_cpu
    assert batcher.config.inline_lone_calls is on_cpu
    assert batcher.config.max_concurrent_batches == 2

    async def threads_with(requests_in_flight: int) -> list[int]:
        # The batcher asks the service's own count of requests in flight whether a call is the only work.
        metrics.requests_in_flight.count = requests_in_flight
        await batcher.submit(latents(1.0))
        return runtime.run.threads[-1:]

    async def scenario() -> tuple[list[int], list[int]]:
        await batcher.start()
        try:
            await batcher.submit(latents(0.0))  # times the model
            return await threads_with(1), await threads_with(2)
        finally:
            await batcher.stop()

    alone, not_alone = asyncio.run(scenario())
    assert (alone == [threading.main_thread().ident]) is on_cpu
    assert not_alone != [threading.main_thread().ident]


class ThreadRecordingModel:
    """Doubles the first column of `z` and records the thread of each call; fails the calls it is told to, and
    takes `call_s` per call."""

    def __init__(self, fail_calls: frozenset[int] = frozenset(), call_s: float = 0.0) -> None:
        self.threads: list[int] = []
        self.fail_calls = fail_calls
        self.call_s = call_s

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.threads.append(threading.get_ident())
        time.sleep(self.call_s)
        if len(self.threads) - 1 in self.fail_calls:
            raise RuntimeError("fake failure")
        return inputs["z"][:, 0] * 2


# A bound on inline calls that the fake model's calls stay far below however busy the machine is (they take
# microseconds; the service's own bound, 5 ms, is for real models on an idle machine), and a call far above it.
QUICK_CALL_S = 0.2
SLOW_CALL_S = 0.4


def inline_config(**overrides: Any) -> BatchingConfig:
    values: dict[str, Any] = {
        "max_delay_ms": 0,
        "adaptive_delay": False,
        "inline_lone_calls": True,
        "inline_max_call_s": QUICK_CALL_S,
        **overrides,
    }
    return BatchingConfig(**values)


async def call_threads(
    config: BatchingConfig, requests: list[list[float]], alone: Any = lambda: True, call_s: float = 0.0
) -> tuple[list[int], int]:
    """The threads the model ran on for `requests` submitted in one loop turn (after a one-image call that
    measures the model), and the event loop's thread."""
    model = ThreadRecordingModel(call_s=call_s)
    batcher = Batcher(model, config, name="threads", alone=alone)
    await batcher.start()
    try:
        await batcher.submit(latents(0.0))
        results = await asyncio.gather(*(batcher.submit(latents(*values)) for values in requests))
        assert [result.tolist() for result in results] == [doubled(*values) for values in requests]
        return model.threads, threading.get_ident()
    finally:
        await batcher.stop()


def test_a_lone_small_quick_call_runs_on_the_event_loops_thread_once_the_model_was_timed() -> None:
    threads, loop_thread = asyncio.run(call_threads(inline_config(), [[1.0, 2.0, 3.0, 4.0]]))
    assert threads[0] != loop_thread  # the first call, before any was timed
    assert threads[1:] == [loop_thread]


@pytest.mark.parametrize(
    ("config", "requests", "alone", "call_s"),
    [
        (inline_config(), [[1.0]], lambda: False, 0.0),
        (inline_config(), [[1.0]], None, 0.0),
        (inline_config(), [[1.0, 2.0, 3.0, 4.0, 5.0]], lambda: True, 0.0),
        (inline_config(), [[1.0]], lambda: True, SLOW_CALL_S),
        (inline_config(inline_lone_calls=False), [[1.0]], lambda: True, 0.0),
        (inline_config(max_batch_size=1, max_concurrent_batches=1), [[1.0], [2.0]], lambda: True, 0.0),
    ],
    ids=[
        "another request in the service",
        "no way to tell",
        "five images",
        "slow calls",
        "off (GPU)",
        "a request queued behind",
    ],
)
def test_a_call_runs_on_a_worker_thread_unless_it_is_small_quick_and_the_only_work(
    config: BatchingConfig, requests: list[list[float]], alone: Any, call_s: float
) -> None:
    threads, loop_thread = asyncio.run(call_threads(config, requests, alone, call_s))
    # The timing call, then the call in question.
    assert len(threads) == 1 + len(requests) and loop_thread not in threads[:2]


def test_a_failing_inline_call_fails_its_request_and_the_next_call_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[BaseException | np.ndarray, ...]:
        model = ThreadRecordingModel(fail_calls=frozenset({1}))
        batcher = Batcher(model, inline_config(), name="threads", alone=lambda: True)
        await batcher.start()
        try:
            await batcher.submit(latents(0.0))  # times the model, on a worker thread
            first = await asyncio.gather(batcher.submit(latents(1.0)), return_exceptions=True)
            second = await batcher.submit(latents(2.0))
            assert model.threads[1:] == [threading.get_ident()] * 2
            return (*first, second)
        finally:
            await batcher.stop()

    with caplog.at_level(logging.ERROR, logger="app.latent.batching"):
        failed, succeeded = asyncio.run(scenario())
    assert isinstance(failed, ModelCallFailed)
    assert isinstance(succeeded, np.ndarray) and succeeded.tolist() == doubled(2.0)
