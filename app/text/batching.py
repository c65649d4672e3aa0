"""Continuous batching for text generators: every active sequence advances one token per model call.

One consumer task per text model version runs a loop of steps. Before each step, waiting sequences join
(up to `max_active_sequences`); the step feeds each active sequence its next input token (the token it
sampled last) in ONE call of the model's `step` signature on a worker thread, then samples the next token
of every sequence.

Prompts are read by the model's `prefill` signature where it has one: in the same turn as the decode step,
one call reads the prompts of every sequence still reading, each up to `prefill_chunk_tokens` characters
while other sequences are decoding (so a long prompt delays their next token by one bounded call, not by
thousands of steps) and whole when nothing else is running. A sequence whose prompt is read samples its
first token from the prefill's logits at once. A model without `prefill` reads prompts one character per
step, beside the decoding sequences. The state and logits after a whole prompt are kept (within
`prompt_cache_bytes`, least recently used first out), so a prompt read before is not read again: its next
sequence samples at once, from its own seed.
A sequence leaves as soon as it is finished (its token budget, a stop sequence or end-of-text), its
request's deadline passes or its client goes away, so a short request never waits for a long one and a
new one starts at the next step instead of after the current batch.

Free places go to requests fairly: the next sequence admitted is from the waiting request with the fewest
sequences running, and among those from the one served least recently (a request never served first), so
one request's many sequences take turns with everyone else's instead of going ahead of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.server.errors import DeadlineExceeded, ModelCallFailed, Overloaded, ServiceError, ShuttingDown
from app.serving.consumers import notify, wind_down
from app.serving.sized_cache import SizedCache
from genserve.store import END_OF_TEXT_ID
from genserve.text import GREEDY_BELOW_TEMPERATURE, sample_token

logger = logging.getLogger(__name__)

DEFAULT_MAX_ACTIVE_SEQUENCES = 64
DEFAULT_MAX_QUEUED_SEQUENCES = 256
# Prompt characters one sequence reads per turn while others are decoding.
DEFAULT_PREFILL_CHUNK_TOKENS = 512
# Prompt characters all sequences read together in one turn when none is decoding (bounds the call's memory).
PREFILL_TOKENS_PER_CALL = 8192
# States and logits after whole prompts kept for prompts that come again: a few KB each.
DEFAULT_PROMPT_CACHE_BYTES = 32 * 1024 * 1024
# A client told to come back later than this would rather try another replica.
MAX_RETRY_AFTER_S = 60
# Why a sequence ended.
FINISH_LENGTH = "length"
FINISH_STOP = "stop"
FINISH_END_OF_TEXT = "end_of_text"


class StepModel(Protocol):
    """What the scheduler drives: a text runtime, or a fake in tests."""

    @property
    def vocabulary(self) -> list[str]: ...

    def initial_state(self, batch_size: int) -> np.ndarray: ...

    def step(self, token_ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    @property
    def can_prefill(self) -> bool:
        """Whether `prefill` reads whole prompts (else the scheduler feeds them one character per step)."""
        ...

    def prefill(
        self, token_ids: np.ndarray, lengths: np.ndarray, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``token_ids [B, T]`` up to ``lengths [B]`` from ``state [B, S]``: (logits [B, V] after each
        row's last token, the state there)."""
        ...


@dataclass(frozen=True)
class TextBatchingConfig:
    """How many sequences decode together, how many may wait for a place, how much prompt one sequence
    reads per turn while others decode, and the bytes kept of prompts read (0 keeps none)."""

    max_active_sequences: int = DEFAULT_MAX_ACTIVE_SEQUENCES
    max_queued_sequences: int = DEFAULT_MAX_QUEUED_SEQUENCES
    prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS
    prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES

    def __post_init__(self) -> None:
        if self.max_active_sequences < 1 or self.max_queued_sequences < 1 or self.prefill_chunk_tokens < 1:
            raise ValueError(
                "max_active_sequences, max_queued_sequences and prefill_chunk_tokens must be >= 1"
            )
        if self.prompt_cache_bytes < 0:
            raise ValueError("prompt_cache_bytes must be >= 0")


@dataclass(frozen=True)
class Sampling:
    """How one request's sequences pick tokens and when they stop."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    @property
    def sampling_temperature(self) -> float:
        """The temperature tokens are sampled at: 0 (greedy) for one below `GREEDY_BELOW_TEMPERATURE`."""
        return 0.0 if self.temperature < GREEDY_BELOW_TEMPERATURE else self.temperature


@dataclass(frozen=True)
class TokenEvent:
    """New text of sequence `index`; `finish_reason` is set on its last event (then `text` may be empty)."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class StepReport:
    """One model call, as observers see it."""

    sequences: int
    requests: int
    prompt_tokens: int  # prompt characters read in this turn
    generated_tokens: int
    step_s: float


class StepObserver(Protocol):
    """Receives continuous-batching metrics; implementations must be cheap, and their errors are only logged."""

    def on_step(self, report: StepReport) -> None:
        """One step advanced every active sequence."""
        return None

    def on_first_token(self, seconds: float) -> None:
        """A sequence produced its first token, `seconds` after it was submitted."""
        return None

    def on_reject(self, reason: str) -> None:
        """A request was refused (queue full, deadline, shutdown, ...)."""
        return None

    def on_sequences(self, active: int, queued: int) -> None:
        """The sequences being decoded and waiting for a place changed to `active` and `queued`."""
        return None


class NullStepObserver(StepObserver):
    """An observer that ignores everything."""


@dataclass
class TextBatcherStats:
    """Counters since start: model calls, tokens sampled, sequences finished."""

    steps: int = 0
    tokens: int = 0
    sequences: int = 0


_PROMPT_KEY_BYTES = 16


def _prompt_key(context: list[int]) -> bytes:
    """A digest of a whole context (its ids and so its length): the prompt cache's key."""
    return hashlib.blake2b(np.asarray(context, np.int32).tobytes(), digest_size=_PROMPT_KEY_BYTES).digest()


class TextSequence:
    """One sequence's progress; touched by the worker thread only while its step runs."""

    def __init__(self, job: TextJob, index: int, context: list[int], seed: int) -> None:
        self.job, self.index = job, index
        self.context = context  # end-of-text and the prompt, fed one per step
        self.fed = 0
        self.generator = np.random.RandomState(seed)
        self.state: np.ndarray | None = None
        self.next_input = context[0]
        self.generated: list[int] = []
        self.text = ""
        self.emitted = 0
        self.finish_reason: str | None = None
        self.admitted: int | None = None  # its place in the batcher's order of admission

    @property
    def reading(self) -> bool:
        """Still reading its prompt (end-of-text and the prompt's characters)."""
        return self.fed < len(self.context)

    @property
    def tokens_left(self) -> int:
        """Steps still to run: the rest of its context, then its token budget."""
        left = len(self.context) - self.fed + self.job.sampling.max_new_tokens - len(self.generated)
        return 0 if self.finish_reason is not None else left


class TextJob:
    """One request's sequences: their events arrive in `events()`; `cancel()` drops what is left."""

    def __init__(
        self, sampling: Sampling, deadline: float | None, on_cancel: Callable[[TextJob, str], None]
    ) -> None:
        self.sampling = sampling
        self.deadline = deadline
        self.arrived = time.monotonic()
        self.first_token_at: float | None = None
        self.sequences: list[TextSequence] = []
        self.waiting: deque[TextSequence] = deque()  # not admitted yet
        self.last_admitted = -1  # the admission number of its latest sequence to join
        self._events: asyncio.Queue[TokenEvent | ServiceError] = asyncio.Queue()
        self._unfinished = 0
        self._on_cancel: Callable[[TextJob, str], None] = on_cancel
        self.closed = False

    @property
    def hold_back(self) -> int:
        """Characters kept unsent while running, so a stop sequence never reaches the client in part."""
        return max((len(stop) for stop in self.sampling.stop), default=1) - 1

    async def events(self) -> AsyncIterator[TokenEvent]:
        """Token events until every sequence has finished; raises DeadlineExceeded or the job's error."""
        try:
            while self._unfinished or not self._events.empty():
                timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
                try:
                    item = await asyncio.wait_for(self._events.get(), timeout)
                except asyncio.TimeoutError:
                    self.cancel("deadline")
                    raise DeadlineExceeded(
                        "the request deadline passed before its text was generated"
                    ) from None
                if isinstance(item, ServiceError):
                    raise item
                yield item
        finally:
            self.cancel()

    def add_sequences(self, sequences: list[TextSequence]) -> None:
        self.sequences = sequences
        self.waiting = deque(sequences)
        self._unfinished = len(sequences)

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop generating (client gone, deadline passed); a no-op once the job has ended."""
        if not self.closed:
            self.closed = True
            self._on_cancel(self, reason)

    def put(self, event: TokenEvent) -> None:
        if event.finish_reason is not None:
            self._unfinished -= 1
        self._events.put_nowait(event)

    def fail(self, error: ServiceError) -> None:
        self._unfinished = 0
        self.closed = True
        self._events.put_nowait(error)


class TextBatcher:
    """Continuous batching over one text model version (see the module docstring)."""

    def __init__(
        self,
        model: StepModel,
        config: TextBatchingConfig,
        *,
        name: str = "model",
        observer: StepObserver | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.stats = TextBatcherStats()
        self._model = model
        self._observer: StepObserver = observer or NullStepObserver()
        self._waiting: list[TextJob] = []  # requests with sequences not admitted yet, in order of arrival
        self._active: list[TextSequence] = []
        self._admissions = 0
        self._reported = (0, 0)
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._closing = False
        self._tokens_per_s = 0.0  # measured over recent steps: prompt characters and sampled tokens
        # Touched on the worker thread only.
        self._prompts: SizedCache[bytes, tuple[np.ndarray, np.ndarray]] = SizedCache(
            config.prompt_cache_bytes, lambda pair: pair[0].nbytes + pair[1].nbytes + _PROMPT_KEY_BYTES
        )

    @property
    def queued_sequences(self) -> int:
        return sum(len(job.waiting) for job in self._waiting)

    @property
    def active_sequences(self) -> int:
        return len(self._active)

    def pending(self) -> int:
        """Sequences waiting for a place or being decoded."""
        return self.queued_sequences + len(self._active)

    def pending_description(self) -> str:
        return f"{self.queued_sequences} queued and {len(self._active)} active sequences"

    async def start(self) -> None:
        if self._consumer is not None or self._closing:
            raise RuntimeError(f"text batcher {self.name!r} was already started or stopped; create a new one")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"text-{self.name}")
        self._consumer = asyncio.get_running_loop().create_task(self._consume(), name=f"text-{self.name}")
        self._notify(lambda: self._observer.on_sequences(0, 0))

    def submit(
        self,
        contexts: list[list[int]],
        seeds: list[int],
        sampling: Sampling,
        *,
        deadline: float | None = None,
    ) -> TextJob:
        """Queue one sequence per context (ids fed before sampling) with its seed; returns at once."""
        if self._closing:
            self._reject("shutdown")
            raise ShuttingDown()
        if self._consumer is None:
            raise RuntimeError(f"text batcher {self.name!r} is not started; await start() first")
        queued = self.queued_sequences
        if queued + len(contexts) > self.config.max_queued_sequences:
            self._reject("overload")
            limit = self.config.max_queued_sequences
            raise Overloaded(
                f"{self.name!r} has {queued} of {limit} sequences queued; asked for {len(contexts)}",
                retry_after_s=self._retry_after_s(),
            )
        job = TextJob(sampling, deadline, self._cancel)
        pairs = enumerate(zip(contexts, seeds, strict=True))
        job.add_sequences([TextSequence(job, i, context, seed) for i, (context, seed) in pairs])
        self._waiting.append(job)
        self._report_sequences()
        self._wakeup.set()
        return job

    async def stop(self, *, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Refuse new work; let queued and active sequences finish within `timeout_s` if `drain`; fail the rest."""
        self._closing = True
        self._wakeup.set()
        await wind_down(self._consumer, drain=drain, timeout_s=timeout_s)
        self._fail_all(ShuttingDown())
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _consume(self) -> None:
        try:
            while True:
                self._admit()
                if not self._active:
                    if self._closing and not self._waiting:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._step()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("text batcher %r stopped unexpectedly", self.name)
            self._closing = True
            self._fail_all(ModelCallFailed("the text batcher stopped unexpectedly"))

    def _admit(self) -> None:
        """Drop sequences and requests that ended, then fill the free places fairly (module docstring)."""
        now = time.monotonic()
        self._active = [seq for seq in self._active if self._still_running(seq, now)]
        self._waiting = [job for job in self._waiting if self._still_wanted(job, now)]
        running = Counter(id(seq.job) for seq in self._active)

        def turn(job: TextJob) -> tuple[int, int]:
            return running[id(job)], job.last_admitted

        while self._waiting and len(self._active) < self.config.max_active_sequences:
            job = min(self._waiting, key=turn)  # the first of equals: the earliest to arrive
            seq = job.waiting.popleft()
            seq.admitted = job.last_admitted = self._admissions
            self._admissions += 1
            running[id(job)] += 1
            self._active.append(seq)
            if not job.waiting:
                self._waiting.remove(job)
        self._report_sequences()

    def _still_running(self, seq: TextSequence, now: float) -> bool:
        return seq.finish_reason is None and self._still_wanted(seq.job, now)

    def _still_wanted(self, job: TextJob, now: float) -> bool:
        if job.closed:
            return False
        if job.deadline is not None and now >= job.deadline:
            self._reject("deadline")
            job.fail(DeadlineExceeded("the request deadline passed before its text was generated"))
            return False
        return True

    async def _step(self) -> None:
        batch = list(self._active)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            sampled, read, work = await loop.run_in_executor(self._executor, self._advance, batch)
        except Exception:
            logger.exception("text step for %r failed (%d sequences)", self.name, len(batch))
            for seq in batch:
                seq.job.fail(ModelCallFailed(f"the model call for {self.name!r} failed"))
            return
        step_s = time.monotonic() - started
        rate = work / max(step_s, 1e-6)
        self._tokens_per_s = 0.8 * (self._tokens_per_s or rate) + 0.2 * rate
        generated = 0
        for seq, token in zip(batch, sampled, strict=True):
            if token is not None and not seq.job.closed:
                generated += 1
                self._accept(seq, token)
        self.stats.steps += 1
        self.stats.tokens += generated
        requests = len({id(seq.job) for seq in batch})
        report = StepReport(len(batch), requests, read, generated, step_s)
        self._notify(lambda: self._observer.on_step(report))

    def _advance(self, batch: list[TextSequence]) -> tuple[list[int | None], int, int]:
        """On the worker thread: the turn's model calls (a prefill for the sequences reading their prompts,
        where the model has one, and one step for the rest), then each sequence's next token (None for one
        still reading); also the prompt characters read, and the tokens of work done (characters prefilled
        and sequences stepped), the measure of the batcher's speed."""
        sampled: dict[int, int | None] = {}
        # Fresh sequences whose whole prompt was read before sample at once; the others go to the model.
        calling = [
            seq
            for seq in batch
            if not (self._prompts.enabled and seq.fed == 0 and self._recall(seq, sampled))
        ]
        self._start_states(calling)
        reading, stepping = self._split(calling)
        prefilled = 0
        if reading:
            chunk = self.config.prefill_chunk_tokens
            if not stepping:  # nobody waits on this call: read as much as one call may
                chunk = max(chunk, PREFILL_TOKENS_PER_CALL // len(reading))
            prefilled = self._prefill(reading, chunk, sampled)
        read = prefilled + sum(seq.reading for seq in stepping)
        if stepping:
            self._step_once(stepping, sampled)
        return [sampled[id(seq)] for seq in batch], read, prefilled + len(stepping)

    def _split(self, batch: list[TextSequence]) -> tuple[list[TextSequence], list[TextSequence]]:
        """The sequences the turn's prefill reads, and those its step advances. A prompt with one character
        left rides along in the step when others are stepping: a call of its own would cost more than it saves."""
        if not self._model.can_prefill:
            return [], batch
        if all(seq.reading for seq in batch):
            return batch, []
        long = [seq for seq in batch if len(seq.context) - seq.fed > 1]
        return long, [seq for seq in batch if len(seq.context) - seq.fed <= 1]

    def _start_states(self, batch: list[TextSequence]) -> None:
        fresh = [seq for seq in batch if seq.state is None]
        if fresh:
            zeros = self._model.initial_state(len(fresh))
            for row, seq in enumerate(fresh):
                seq.state = zeros[row]

    def _prefill(self, reading: list[TextSequence], chunk: int, sampled: dict[int, int | None]) -> int:
        """One prefill call: each sequence's next `chunk` prompt characters; those that finish their prompt
        sample their first token. Sequences that have read the same characters so far and read the same next
        ones (a request's `n` sequences of one prompt) share one row. Returns the characters read."""
        rows: dict[tuple[int, ...], int] = {}
        row_of = [rows.setdefault(tuple(seq.context[: seq.fed + chunk]), len(rows)) for seq in reading]
        firsts = [reading[row_of.index(row)] for row in range(len(rows))]
        pieces = [seq.context[seq.fed : seq.fed + chunk] for seq in firsts]
        lengths = np.array([len(piece) for piece in pieces], dtype=np.int32)
        token_ids = np.zeros((len(pieces), int(lengths.max())), dtype=np.int32)
        for row, piece in enumerate(pieces):
            token_ids[row, : len(piece)] = piece
        states = np.stack([seq.state for seq in firsts if seq.state is not None])
        logits, new_states = self._model.prefill(token_ids, lengths, states)
        self._check_rows(len(firsts), logits, new_states)
        for seq, row in zip(reading, row_of, strict=True):
            seq.state = new_states[row]
            seq.fed += int(lengths[row])
            sampled[id(seq)] = None if seq.reading else self._read(seq, logits[row])
        return int(lengths.sum())

    def _step_once(self, stepping: list[TextSequence], sampled: dict[int, int | None]) -> None:
        """One step call: every sequence's next input; those past their prompt sample a token."""
        token_ids = np.array([seq.next_input for seq in stepping], dtype=np.int32)
        states = np.stack([seq.state for seq in stepping if seq.state is not None])
        logits, new_states = self._model.step(token_ids, states)
        self._check_rows(len(stepping), logits, new_states)
        for seq, row, state in zip(stepping, logits, new_states, strict=True):
            seq.state = state
            seq.fed += 1
            if seq.reading:
                seq.next_input = seq.context[seq.fed]
                sampled[id(seq)] = None
            elif seq.fed == len(seq.context):  # its prompt's last character was just read
                sampled[id(seq)] = self._read(seq, row)
            else:
                sampled[id(seq)] = self._sample(seq, row)

    def _recall(self, seq: TextSequence, sampled: dict[int, int | None]) -> bool:
        """A fresh sequence whose whole prompt was read before takes its state and samples at once."""
        kept = self._prompts.get(_prompt_key(seq.context))
        if kept is None:
            return False
        seq.state, logits = kept
        seq.fed = len(seq.context)
        sampled[id(seq)] = self._sample(seq, logits)
        return True

    def _read(self, seq: TextSequence, logits: np.ndarray) -> int:
        """A sequence has just read its whole prompt: keep the state and logits for the prompt's next reader,
        and sample its first token."""
        if self._prompts.enabled and seq.state is not None:
            self._prompts.put(_prompt_key(seq.context), (seq.state, logits))
        return self._sample(seq, logits)

    @staticmethod
    def _check_rows(rows: int, logits: np.ndarray, states: np.ndarray) -> None:
        if logits.shape[0] != rows or states.shape[0] != rows:
            raise ValueError(f"the model returned {logits.shape[0]} rows for a batch of {rows}")

    @staticmethod
    def _sample(seq: TextSequence, logits: np.ndarray) -> int:
        sampling = seq.job.sampling
        return sample_token(
            logits,
            seq.generator,
            temperature=sampling.sampling_temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
        )

    def _accept(self, seq: TextSequence, token: int) -> None:
        """Record a sampled token: send the text it adds, and finish the sequence when it should end."""
        job = seq.job
        if job.first_token_at is None:
            job.first_token_at = time.monotonic()
            waited = job.first_token_at - job.arrived
            self._notify(lambda: self._observer.on_first_token(waited))
        if token == END_OF_TEXT_ID:
            self._finish(seq, FINISH_END_OF_TEXT, len(seq.text))
            return
        seq.generated.append(token)
        seq.next_input = token
        seq.text += self._model.vocabulary[token]
        stop = next((stop for stop in job.sampling.stop if seq.text.endswith(stop)), None)
        if stop is not None:
            self._finish(seq, FINISH_STOP, len(seq.text) - len(stop))
        elif len(seq.generated) >= job.sampling.max_new_tokens:
            self._finish(seq, FINISH_LENGTH, len(seq.text))
        else:
            self._send(seq, len(seq.text) - job.hold_back)

    def _send(self, seq: TextSequence, upto: int) -> None:
        if upto > seq.emitted:
            seq.job.put(TokenEvent(seq.index, seq.text[seq.emitted : upto]))
            seq.emitted = upto

    def _finish(self, seq: TextSequence, reason: str, upto: int) -> None:
        seq.text = seq.text[:upto]
        self._send(seq, upto)
        seq.finish_reason = reason
        seq.job.put(TokenEvent(seq.index, "", reason))
        self.stats.sequences += 1

    def _cancel(self, job: TextJob, reason: str) -> None:
        """A request that gave up (disconnect, deadline): its queued sequences leave now, its active ones at the
        next step."""
        if any(seq.finish_reason is None for seq in job.sequences):
            self._reject(reason)
        if job in self._waiting:
            self._waiting.remove(job)
        job.waiting.clear()
        self._report_sequences()

    def _fail_all(self, error: ServiceError) -> None:
        for job in [*(seq.job for seq in self._active), *self._waiting]:
            if not job.closed:
                job.fail(error)
        self._active, self._waiting = [], []
        self._report_sequences()

    def _retry_after_s(self) -> int:
        """Seconds to finish the work ahead (every queued and active sequence's tokens left) at the measured
        rate; 1 before any step was measured, never more than `MAX_RETRY_AFTER_S`."""
        if not self._tokens_per_s:
            return 1
        queued = (seq for job in self._waiting for seq in job.waiting)
        work = sum(seq.tokens_left for seq in [*self._active, *queued])
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(work / self._tokens_per_s)))

    def _report_sequences(self) -> None:
        """Tell the observer how many sequences are active and queued, when that changed."""
        counts = (len(self._active), self.queued_sequences)
        if counts != self._reported:
            self._reported = counts
            self._notify(lambda: self._observer.on_sequences(*counts))

    def _reject(self, reason: str) -> None:
        self._notify(lambda: self._observer.on_reject(reason))

    def _notify(self, hook: Callable[[], None]) -> None:
        notify(hook, self.name)
