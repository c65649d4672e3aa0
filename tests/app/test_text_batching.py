"""The continuous batcher with a fake step model: joins and leaves at step boundaries, seeds, stops, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from app.server.errors import DeadlineExceeded, ModelCallFailed, Overloaded, ShuttingDown
from app.text.batching import (
    FINISH_END_OF_TEXT,
    FINISH_LENGTH,
    FINISH_STOP,
    Sampling,
    StepReport,
    TextBatcher,
    TextBatchingConfig,
    TextJob,
)

VOCABULARY = ["\u241e", "a", "b", "c", "d", "e"]


class FakeStepModel:
    """State is one float per sequence, the count of tokens it has read; logits (`base_logit` elsewhere) favour
    `input + 1` (cyclic), and the end-of-text once the state reaches `end_after`. Records the batch size of every
    step call."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        end_after: int = 10_000,
        fail: bool = False,
        base_logit: float = 0.0,
        can_prefill: bool = False,
    ) -> None:
        self.can_prefill = can_prefill
        self.prefills: list[tuple[int, int]] = []  # rows and width of every prefill call
        self.batch_sizes: list[int] = []
        self.base_logit = base_logit
        self.delay_s = delay_s
        self.end_after = end_after
        self.fail = fail
        self.release = threading.Event()
        self.release.set()

    @property
    def vocabulary(self) -> list[str]:
        return VOCABULARY

    def initial_state(self, batch_size: int) -> np.ndarray:
        return np.zeros((batch_size, 1), np.float32)

    def step(self, token_ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.release.wait(10)
        self.batch_sizes.append(len(token_ids))
        if self.fail:
            raise RuntimeError("broken model")
        if self.delay_s:
            time.sleep(self.delay_s)
        logits = np.full((len(token_ids), len(VOCABULARY)), self.base_logit, np.float32)
        following = token_ids % (len(VOCABULARY) - 1) + 1
        logits[np.arange(len(token_ids)), following] = 3.0
        ended = state[:, 0] + 1 >= self.end_after
        logits[ended, 0] = 50.0
        return logits, state + 1

    def prefill(
        self, token_ids: np.ndarray, lengths: np.ndarray, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """What `step` gives after each row's last token, in one call (the state counts every token read)."""
        assert self.can_prefill
        self.prefills.append(token_ids.shape)
        last = token_ids[np.arange(len(lengths)), lengths - 1]
        logits, _ = FakeStepModel.step(self, last, state + lengths[:, None] - 1)
        self.batch_sizes.pop()  # a prefill, not a step
        return logits, state + lengths[:, None]


class Recorder:
    def __init__(self) -> None:
        self.steps: list[StepReport] = []
        self.first_tokens: list[float] = []
        self.rejections: list[str] = []
        self.occupancy: list[tuple[int, int]] = []

    def on_step(self, report: StepReport) -> None:
        self.steps.append(report)

    def on_first_token(self, seconds: float) -> None:
        self.first_tokens.append(seconds)

    def on_reject(self, reason: str) -> None:
        self.rejections.append(reason)

    def on_sequences(self, active: int, queued: int) -> None:
        self.occupancy.append((active, queued))


async def _settled(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Whether `condition` holds within `timeout_s` (a step may still be running when it is asked)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return condition()


async def _texts(job: TextJob) -> tuple[list[str], list[str]]:
    texts = ["" for _ in job.sequences]
    reasons = ["" for _ in job.sequences]
    async for event in job.events():
        texts[event.index] += event.text
        if event.finish_reason:
            reasons[event.index] = event.finish_reason
    return texts, reasons


def _run(
    scenario: Callable[[TextBatcher, FakeStepModel, Recorder], object],
    model: FakeStepModel | None = None,
    **config: int,
) -> None:
    model = model or FakeStepModel()
    recorder = Recorder()

    async def main() -> None:
        batcher = TextBatcher(model, TextBatchingConfig(**config), name="fake:1", observer=recorder)
        await batcher.start()
        try:
            await scenario(batcher, model, recorder)  # type: ignore[misc]
        finally:
            await batcher.stop(drain=False)

    asyncio.run(main())


GREEDY = Sampling(max_new_tokens=6, temperature=0.0)


def test_greedy_text_follows_the_model_and_stops_at_the_token_budget() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        texts, reasons = await _texts(batcher.submit([[0, 1]], [0], GREEDY))
        assert texts == ["bcdeab"] and reasons == [FINISH_LENGTH]
        # Two context tokens (end-of-text, "a") then six sampled ones: one step each, the last token unfed.
        assert len(model.batch_sizes) == 1 + 6
        assert recorder.steps[0].generated_tokens == 0 and recorder.steps[1].generated_tokens == 1
        assert len(recorder.first_tokens) == 1

    _run(scenario)


def test_a_short_request_finishes_while_a_long_one_is_still_running() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        long_job = batcher.submit([[0]], [1], Sampling(max_new_tokens=200, temperature=0.0))
        long_task = asyncio.create_task(_texts(long_job))
        await asyncio.sleep(0.05)  # the long one is decoding before the short one arrives
        short_texts, reasons = await _texts(
            batcher.submit([[0]], [2], Sampling(max_new_tokens=3, temperature=0.0))
        )
        assert reasons == [FINISH_LENGTH] and len(short_texts[0]) == 3
        assert not long_task.done() and batcher.active_sequences == 1
        long_texts, _ = await long_task
        assert len(long_texts[0]) == 200
        # The short request joined a running batch (2 sequences per step) and left it early.
        sizes = model.batch_sizes
        assert sizes[0] == 1 and 2 in sizes and sizes[-1] == 1

    _run(scenario, FakeStepModel(delay_s=0.002))


def test_sequences_of_several_requests_share_step_calls() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        model.release.clear()
        jobs = [batcher.submit([[0]] * 2, [i, i + 1], GREEDY) for i in range(0, 6, 2)]
        model.release.set()
        results = await asyncio.gather(*(_texts(job) for job in jobs))
        assert all(reasons == [FINISH_LENGTH] * 2 for _, reasons in results)
        assert max(model.batch_sizes) == 6
        assert max(report.requests for report in recorder.steps) == 3

    _run(scenario)


def test_the_same_seed_gives_the_same_text_alone_and_batched() -> None:
    sampling = Sampling(max_new_tokens=40, temperature=1.5)

    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        alone, _ = await _texts(batcher.submit([[0]], [42], sampling))
        others = [batcher.submit([[0, 2]], [seed], sampling) for seed in range(5)]
        together = batcher.submit([[0]], [42], sampling)
        more = [batcher.submit([[0, 3, 4]], [seed], sampling) for seed in range(5, 9)]
        texts = await asyncio.gather(*(_texts(job) for job in [*others, together, *more]))
        assert texts[5][0] == alone
        assert len({text[0][0] for text in texts}) > 3  # the seeds do differ
        assert max(model.batch_sizes) > 1

    _run(scenario)


def test_a_stop_sequence_ends_the_text_and_is_never_sent_even_in_part() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        job = batcher.submit([[0]], [0], Sampling(max_new_tokens=50, temperature=0.0, stop=("zz", "dea")))
        pieces = [event.text async for event in job.events()]
        assert "".join(pieces) == "abc" and job.sequences[0].finish_reason == FINISH_STOP
        assert "d" not in "".join(pieces)

    _run(scenario)


def test_the_end_of_text_token_finishes_a_sequence() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        texts, reasons = await _texts(
            batcher.submit([[0]], [0], Sampling(max_new_tokens=50, temperature=0.0))
        )
        assert reasons == [FINISH_END_OF_TEXT] and texts == ["abcd"]

    _run(scenario, FakeStepModel(end_after=5))


def test_no_more_than_max_active_sequences_step_together() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        results = await _texts(batcher.submit([[0]] * 5, list(range(5)), GREEDY))
        assert results[1] == [FINISH_LENGTH] * 5
        assert max(model.batch_sizes) == 2

    _run(scenario, max_active_sequences=2)


def test_a_full_queue_is_overloaded_with_retry_after() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        model.release.clear()
        first = batcher.submit([[0]], [0], GREEDY)
        await asyncio.sleep(0.02)  # admitted, its step is held
        second = batcher.submit([[0]], [1], GREEDY)
        with pytest.raises(Overloaded) as raised:
            batcher.submit([[0]], [2], GREEDY)
        assert int(raised.value.headers["Retry-After"]) >= 1 and recorder.rejections == ["overload"]
        model.release.set()
        await asyncio.gather(_texts(first), _texts(second))

    _run(scenario, max_active_sequences=1, max_queued_sequences=1)


def test_a_passed_deadline_fails_the_request_and_frees_its_place() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        job = batcher.submit([[0]], [0], Sampling(max_new_tokens=10_000), deadline=time.monotonic() + 0.1)
        with pytest.raises(DeadlineExceeded):
            await _texts(job)
        assert await _settled(lambda: batcher.active_sequences == 0)
        assert "deadline" in recorder.rejections

    # Steps slow enough that the deadline passes long before the model's cyclic tokens reach end-of-text.
    _run(scenario, FakeStepModel(delay_s=0.05))


def test_a_cancelled_request_leaves_at_the_next_step() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        job = batcher.submit([[0]] * 3, [0, 1, 2], Sampling(max_new_tokens=10_000))
        await asyncio.sleep(0.05)
        job.cancel()
        assert await _settled(lambda: batcher.active_sequences == 0)
        assert recorder.rejections == ["cancelled"]
        steps = len(model.batch_sizes)
        await asyncio.sleep(0.05)
        assert len(model.batch_sizes) == steps

    _run(scenario, FakeStepModel(delay_s=0.002))


def test_stopping_with_drain_finishes_the_work_and_refuses_new_work() -> None:
    model = FakeStepModel(delay_s=0.001)

    async def main() -> None:
        batcher = TextBatcher(model, TextBatchingConfig(), name="fake:1")
        await batcher.start()
        job = batcher.submit([[0]] * 2, [0, 1], Sampling(max_new_tokens=30, temperature=0.0))
        collecting = asyncio.create_task(_texts(job))
        await asyncio.sleep(0.01)
        await batcher.stop(drain=True, timeout_s=10)
        texts, reasons = await collecting
        assert reasons == [FINISH_LENGTH] * 2 and all(len(text) == 30 for text in texts)
        with pytest.raises(ShuttingDown):
            batcher.submit([[0]], [0], GREEDY)

    asyncio.run(main())


def test_stopping_without_drain_fails_what_is_left() -> None:
    async def main() -> None:
        batcher = TextBatcher(FakeStepModel(delay_s=0.002), TextBatchingConfig(), name="fake:1")
        await batcher.start()
        job = batcher.submit([[0]], [0], Sampling(max_new_tokens=10_000))
        await asyncio.sleep(0.02)
        await batcher.stop(drain=False)
        with pytest.raises(ShuttingDown):
            await _texts(job)

    asyncio.run(main())


def test_a_failed_step_fails_its_requests_and_the_batcher_goes_on() -> None:
    model = FakeStepModel(fail=True)

    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        with pytest.raises(ModelCallFailed):
            await _texts(batcher.submit([[0]], [0], GREEDY))
        model.fail = False
        texts, _ = await _texts(batcher.submit([[0]], [0], GREEDY))
        assert texts == ["abcdea"]

    _run(scenario, model)


def test_a_tiny_temperature_decodes_greedily() -> None:
    # 1 / 1e-310 and 3 / 1e-310 both overflow to infinity: sampled as they are, every probability is NaN and
    # the first token of the vocabulary (end-of-text) comes out, not the likeliest one.
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        greedy, _ = await _texts(batcher.submit([[0, 1]], [0], GREEDY))
        tiny, _ = await _texts(batcher.submit([[0, 1]], [0], Sampling(max_new_tokens=6, temperature=1e-310)))
        assert tiny == greedy == ["bcdeab"]

    _run(scenario, FakeStepModel(base_logit=1.0))


def test_a_later_request_is_admitted_before_the_rest_of_an_earlier_large_one() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        model.release.clear()
        large = batcher.submit([[0]] * 6, list(range(6)), GREEDY)
        assert await _settled(lambda: batcher.active_sequences == 2)  # its first step is held
        small = batcher.submit([[0]], [9], GREEDY)
        model.release.set()
        await asyncio.gather(_texts(large), _texts(small))
        # The two places freed by the large request's first sequences go to the small one first.
        assert small.sequences[0].admitted == 2
        assert [seq.admitted for seq in large.sequences] == [0, 1, 3, 4, 5, 6]

    _run(scenario, max_active_sequences=2)


def test_waiting_requests_take_free_places_in_turn() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        model.release.clear()
        first = batcher.submit([[0]] * 3, [0, 1, 2], GREEDY)
        assert await _settled(lambda: batcher.active_sequences == 1)
        second = batcher.submit([[0]] * 3, [3, 4, 5], GREEDY)
        third = batcher.submit([[0]] * 2, [6, 7], GREEDY)
        model.release.set()
        jobs = [first, second, third]
        await asyncio.gather(*(_texts(job) for job in jobs))
        order = sorted(
            (seq.admitted, name) for name, job in zip("ABC", jobs, strict=True) for seq in job.sequences
        )
        assert "".join(name for _, name in order) == "ABCABCAB"

    _run(scenario, max_active_sequences=1)


def test_retry_after_counts_the_work_ahead_and_is_capped() -> None:
    # Each step takes at least 10 ms for one sequence: at most 100 tokens/s.
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        running = batcher.submit([[0]], [0], Sampling(max_new_tokens=1000))
        assert await _settled(lambda: batcher.stats.steps >= 3)
        queued = batcher.submit([[0]], [1], Sampling(max_new_tokens=1000))
        with pytest.raises(Overloaded) as raised:
            batcher.submit([[0]], [2], Sampling(max_new_tokens=1))
        # About 2,000 tokens ahead of a one-token request: some 20 s, not the time of its own one token.
        assert 15 <= raised.value.retry_after_s <= 60
        assert raised.value.headers["Retry-After"] == str(raised.value.retry_after_s)
        queued.cancel()
        batcher.submit([[0]], [1], Sampling(max_new_tokens=100_000))
        with pytest.raises(Overloaded) as raised:
            batcher.submit([[0]], [2], Sampling(max_new_tokens=1))
        assert raised.value.retry_after_s == 60
        running.cancel()

    _run(scenario, FakeStepModel(delay_s=0.01), max_active_sequences=1, max_queued_sequences=1)


def test_the_observer_hears_active_and_queued_sequences() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        model.release.clear()
        job = batcher.submit([[0]] * 3, [0, 1, 2], GREEDY)
        assert await _settled(lambda: recorder.occupancy[-1:] == [(2, 1)])
        model.release.set()
        await _texts(job)
        assert await _settled(lambda: recorder.occupancy[-1] == (0, 0))
        assert (1, 0) in recorder.occupancy  # the third sequence ran alone at the end

    _run(scenario, max_active_sequences=2)


def test_a_prompt_read_by_prefill_gives_the_text_of_one_read_step_by_step() -> None:
    prompt = [0, *[1, 2, 3, 4] * 30]
    sampling = Sampling(max_new_tokens=30, temperature=1.0)
    texts, steps = {}, {}
    for can_prefill in (False, True):
        model = FakeStepModel(can_prefill=can_prefill, end_after=140)

        async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
            texts[model.can_prefill] = await _texts(batcher.submit([prompt], [7], sampling))
            steps[model.can_prefill] = len(model.batch_sizes)
            assert recorder.steps[0].prompt_tokens == (len(prompt) if model.can_prefill else 1)

        _run(scenario, model)
        assert model.prefills == ([(1, len(prompt))] if can_prefill else [])
    assert texts[True] == texts[False]
    assert texts[True][1] == [FINISH_END_OF_TEXT]  # the state counted every prompt token
    # Step by step, the prompt took a step per token; the prefill read it in one call and sampled at once.
    assert steps[False] - steps[True] == len(prompt)


def test_a_long_prompt_is_read_in_chunks_while_another_sequence_decodes() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        running = batcher.submit([[0]], [1], Sampling(max_new_tokens=100, temperature=0.0))
        running_task = asyncio.create_task(_texts(running))
        assert await _settled(lambda: len(running.sequences[0].generated) > 0)
        before = len(running.sequences[0].generated)
        long_texts, _ = await _texts(batcher.submit([[0, *[1] * 99]], [2], GREEDY))
        assert long_texts == ["bcdeab"]
        # The 100-token prompt went in chunks of 16, while the running sequence took a step every turn (its own
        # one-token prompt was the first prefill).
        widths = [width for _, width in model.prefills[1:]]
        assert widths[:6] == [16] * 6 and widths[6] == 4
        assert len(running.sequences[0].generated) - before >= 7
        await running_task

    _run(scenario, FakeStepModel(can_prefill=True, delay_s=0.002), prefill_chunk_tokens=16)


def test_with_nothing_else_running_a_prompt_is_read_whole() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        await _texts(batcher.submit([[0, *[1] * 99]], [2], GREEDY))
        assert model.prefills == [(1, 100)]

    _run(scenario, FakeStepModel(can_prefill=True), prefill_chunk_tokens=16)


def test_the_sequences_of_one_prompt_share_its_prefill_and_still_differ_by_seed() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        sampling = Sampling(max_new_tokens=20, temperature=1.5)
        texts, _ = await _texts(batcher.submit([[0, 1, 2, 3]] * 4, [0, 1, 2, 3], sampling))
        assert model.prefills == [(1, 4)]  # one row for the four sequences
        assert len(set(texts)) > 1
        # Each text is what its seed gives alone.
        alone, _ = await _texts(batcher.submit([[0, 1, 2, 3]], [2], sampling))
        assert alone[0] == texts[2]

    _run(scenario, FakeStepModel(can_prefill=True))


@pytest.mark.parametrize("can_prefill", [True, False])
def test_a_prompt_read_before_is_not_read_again(can_prefill: bool) -> None:
    prompt = [0, *[1, 2, 3] * 20]
    sampling = Sampling(max_new_tokens=10, temperature=1.5)
    fresh: dict[int, list[str]] = {}

    async def without_cache(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        for seed in (3, 4):
            fresh[seed], _ = await _texts(batcher.submit([prompt], [seed], sampling))

    _run(without_cache, FakeStepModel(can_prefill=can_prefill), prompt_cache_bytes=0)

    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        first, _ = await _texts(batcher.submit([prompt], [3], sampling))
        calls = len(model.batch_sizes) + len(model.prefills)
        again, _ = await _texts(batcher.submit([prompt], [4], sampling))
        # The second request read nothing: one step per sampled token after its first, no prefill.
        assert len(model.batch_sizes) + len(model.prefills) - calls == len(again[0]) - 1
        assert (first, again) == (fresh[3], fresh[4])
        assert recorder.steps[-1].prompt_tokens == 0

    _run(scenario, FakeStepModel(can_prefill=can_prefill))


def test_a_prompt_cache_of_no_bytes_reads_every_prompt() -> None:
    async def scenario(batcher: TextBatcher, model: FakeStepModel, recorder: Recorder) -> None:
        for seed in (1, 2):
            await _texts(batcher.submit([[0, 1, 2]], [seed], GREEDY))
        assert model.prefills == [(1, 3), (1, 3)]

    _run(scenario, FakeStepModel(can_prefill=True), prompt_cache_bytes=0)
