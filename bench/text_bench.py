"""Text decoding side by side: continuous batching, one request at a time, and static batches.

``python -m bench text [--model-dir model_store/NAME/VERSION] [--concurrency 1,8,32] [--requests N]``

Closed-loop clients (as many as the concurrency) each send their requests one after another; every request
asks for one sequence with `max_new_tokens` drawn from 16-256 (seeded, the same draws for every mode) and
stops only at its budget or the end-of-text token. The three modes drive the same loaded `step` signature:

- continuous: `app.text.batching.TextBatcher`, every active sequence advances one token per call, requests
  join and leave at step boundaries;
- per-request: the same scheduler allowed one active sequence, so each request decodes alone;
- static: up to `--static-batch` waiting requests start together and the batch runs until its longest
  sequence ends; finished rows keep being computed and newcomers wait for the whole batch.

Seeds make every mode produce the same tokens, so tokens/s compare like for like. Without `--model-dir` a
tiny char-rnn is trained first on the procedural grammar (seconds).

Then the time to the first token by prompt length (``--prompt-lengths 1,4096``) at concurrency 1: in every
round (``--prompt-rounds``) each length gets one request with a fresh random prompt, read by the version's
`prefill` and, for comparison, step by step as versions without it are, and a prompt sent a second time (the
batcher keeps the state after a whole prompt); medians, and the ratio of the longest prompt's TTFT to the
shortest's (goal: at most 5x with prefill).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.serving.runtime import DeviceInfo
from app.text.batching import Sampling, StepModel, TextBatcher, TextBatchingConfig
from app.text.runtime import TextRuntime
from genserve.store import END_OF_TEXT_ID
from genserve.text import sample_token

MODES = ("continuous", "per-request", "static")
MIN_TOKENS, MAX_TOKENS = 16, 256


@dataclass(frozen=True)
class Outcome:
    tokens: int
    first_token_s: float
    latency_s: float


@dataclass(frozen=True)
class Row:
    mode: str
    concurrency: int
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    latency_p50_s: float
    steps: int


async def _continuous(batcher: TextBatcher, seed: int, budget: int) -> Outcome:
    started = time.monotonic()
    job = batcher.submit([[END_OF_TEXT_ID]], [seed], Sampling(max_new_tokens=budget))
    first, tokens = None, 0
    async for event in job.events():
        if event.finish_reason is None:
            first = first or time.monotonic()
    tokens = len(job.sequences[0].generated)
    done = time.monotonic()
    return Outcome(tokens, (first or done) - started, done - started)


class StaticBatcher:
    """Waiting requests start together in batches of up to `size`; a batch ends when its last sequence does."""

    def __init__(self, runtime: TextRuntime, size: int) -> None:
        self._runtime, self._size = runtime, size
        self._waiting: deque[tuple[int, int, asyncio.Future[Outcome], float]] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1)
        self.steps = 0

    async def generate(self, seed: int, budget: int) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((seed, budget, future, time.monotonic()))
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = [self._waiting.popleft() for _ in range(min(self._size, len(self._waiting)))]
            outcomes = await loop.run_in_executor(self._executor, self._decode, batch)
            for (_, _, future, _), outcome in zip(batch, outcomes, strict=True):
                future.set_result(outcome)

    def _decode(self, batch: list[tuple[int, int, asyncio.Future[Outcome], float]]) -> list[Outcome]:
        size = len(batch)
        generators = [np.random.RandomState(seed) for seed, *_ in batch]
        tokens = np.full(size, END_OF_TEXT_ID, np.int32)
        state = self._runtime.initial_state(size)
        counts, first, ended = [0] * size, [0.0] * size, [0.0] * size
        while not all(ended):
            logits, state = self._runtime.step(tokens, state)
            self.steps += 1
            now = time.monotonic()
            for row, (_, budget, _, _) in enumerate(batch):
                if ended[row]:
                    continue
                token = sample_token(logits[row], generators[row])
                first[row] = first[row] or now
                if token == END_OF_TEXT_ID or counts[row] + 1 >= budget:
                    ended[row] = now
                counts[row] += token != END_OF_TEXT_ID
                tokens[row] = token
        # Results reach clients only when the whole batch is done.
        done = time.monotonic()
        return [
            Outcome(counts[row], first[row] - arrived, done - arrived)
            for row, (_, _, _, arrived) in enumerate(batch)
        ]


async def _measure(
    runtime: TextRuntime,
    mode: str,
    concurrency: int,
    budgets: list[int],
    static_batch: int,
    prefill: bool = True,
) -> Row:
    work = deque(enumerate(budgets))
    outcomes: list[Outcome] = []
    static = StaticBatcher(runtime, static_batch) if mode == "static" else None
    active = 64 if mode == "continuous" else 1
    model: StepModel = runtime if prefill else _StepByStep(runtime)
    batcher = TextBatcher(model, TextBatchingConfig(max_active_sequences=active, max_queued_sequences=4096))
    await batcher.start()
    static_task = asyncio.create_task(static.run()) if static else None

    async def client() -> None:
        while work:
            seed, budget = work.popleft()
            if static is not None:
                outcomes.append(await static.generate(seed, budget))
            else:
                outcomes.append(await _continuous(batcher, seed, budget))

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await batcher.stop(drain=False)
    if static_task is not None:
        static_task.cancel()
    ttfts = sorted(o.first_token_s for o in outcomes)
    return Row(
        mode,
        concurrency,
        sum(o.tokens for o in outcomes) / elapsed,
        statistics.median(ttfts),
        _percentile(ttfts, 0.99),
        statistics.median(o.latency_s for o in outcomes),
        static.steps if static else batcher.stats.steps,
    )


class _StepByStep:
    """The runtime with its prefill hidden: prompts are read one character per step."""

    can_prefill = False

    def __init__(self, runtime: TextRuntime) -> None:
        self._runtime = runtime

    @property
    def vocabulary(self) -> list[str]:
        return self._runtime.vocabulary

    def initial_state(self, batch_size: int) -> np.ndarray:
        return self._runtime.initial_state(batch_size)

    def step(self, token_ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._runtime.step(token_ids, state)

    def prefill(
        self, token_ids: np.ndarray, lengths: np.ndarray, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("prompts are read step by step")


@dataclass(frozen=True)
class PromptRow:
    reading: str
    prompt_chars: int
    ttft_p50_s: float


async def _first_tokens(model: StepModel, prompts: list[list[int]]) -> list[float]:
    """Each prompt's time to its first token, one request at a time."""
    batcher = TextBatcher(model, TextBatchingConfig(max_active_sequences=64, max_queued_sequences=64))
    await batcher.start()
    seconds = []
    for prompt in prompts:
        started = time.monotonic()
        job = batcher.submit([[END_OF_TEXT_ID, *prompt]], [0], Sampling(max_new_tokens=1))
        async for _ in job.events():
            pass
        seconds.append((job.first_token_at or time.monotonic()) - started)
    await batcher.stop(drain=False)
    return seconds


def _prompt_rows(runtime: TextRuntime, lengths: list[int], rounds: int, seed: int) -> list[PromptRow]:
    """Median TTFT per prompt length and way of reading, the lengths interleaved in every round."""
    random = np.random.RandomState(seed)
    readers: list[tuple[str, StepModel]] = [
        ("step by step", _StepByStep(runtime)),
        ("prompt seen before", runtime),
    ]
    if runtime.can_prefill:
        readers.insert(0, ("prefill", runtime))
    rows = []
    for name, model in readers:
        order = [length for _ in range(rounds) for length in lengths]
        prompts = [[int(i) for i in random.randint(1, len(runtime.vocabulary), length)] for length in order]
        asyncio.run(_first_tokens(model, prompts[: len(lengths)]))  # warm-up: every width once
        if name == "prompt seen before":  # each prompt twice in a row; the second is timed
            seconds = asyncio.run(_first_tokens(model, [p for prompt in prompts for p in (prompt, prompt)]))[
                1::2
            ]
        else:
            seconds = asyncio.run(_first_tokens(model, prompts))
        for length in lengths:
            median = statistics.median(s for s, n in zip(seconds, order, strict=True) if n == length)
            rows.append(PromptRow(name, length, median))
            print(f"{name}, {length} chars: TTFT {median * 1000:.1f} ms", file=sys.stderr)
    return rows


def _prompt_table(rows: list[PromptRow]) -> str:
    shortest = {
        row.reading: row.ttft_p50_s for row in rows if row.prompt_chars == min(r.prompt_chars for r in rows)
    }
    lines = [
        "| reading | prompt chars | TTFT p50 (ms) | ÷ shortest prompt's |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row.ttft_p50_s / shortest[row.reading]
        lines.append(f"| {row.reading} | {row.prompt_chars} | {row.ttft_p50_s * 1000:.1f} | {ratio:.1f}x |")
    return "\n".join(lines)


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _goals(rows: list[Row]) -> list[str]:
    """The two ratios the text scheduler is judged by, where the run measured them."""
    cell = {(row.mode, row.concurrency): row for row in rows}
    lines = []
    top = max(row.concurrency for row in rows)
    if ("continuous", top) in cell and ("per-request", top) in cell:
        ratio = cell["continuous", top].tokens_per_s / cell["per-request", top].tokens_per_s
        lines.append(f"continuous / per-request tokens/s at concurrency {top}: {ratio:.1f}x (goal >= 5x)")
    if ("continuous", 1) in cell and ("continuous", top) in cell and top > 1:
        ratio = cell["continuous", top].ttft_p99_s / cell["continuous", 1].ttft_p99_s
        lines.append(f"continuous TTFT p99 at concurrency {top} / at 1: {ratio:.1f}x (goal < 3x)")
    return lines


def _tiny_model(folder: Path) -> Path:
    """A GRU of 64 units trained for a few seconds on the procedural grammar, published under `folder`."""
    from training.text.config import TextTrainConfig
    from training.text.train import train_text

    config = TextTrainConfig(
        dataset="grammar",
        name="grammar-rnn",
        store=folder / "model_store",
        run_dir=folder / "runs",
        layers=1,
        units=64,
        embedding_dim=16,
        sequence_length=32,
        batch_size=32,
        epochs=5,
        lr=1e-2,
        limit_chars=12_000,
    )
    version = train_text(config)
    if version is None:
        raise RuntimeError("training did not publish a version")
    return version


def _table(rows: list[Row]) -> str:
    lines = [
        "| concurrency | mode | tokens/s | TTFT p50 (ms) | TTFT p99 (ms) | latency p50 (s) | model calls |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.concurrency} | {row.mode} | {row.tokens_per_s:.0f} | {row.ttft_p50_s * 1000:.1f} "
            f"| {row.ttft_p99_s * 1000:.1f} | {row.latency_p50_s:.2f} | {row.steps} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench text", description=__doc__)
    parser.add_argument(
        "--model-dir", type=Path, help="a published char-rnn version (default: train a tiny one)"
    )
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per concurrency (default: 4x, at least 64)"
    )
    parser.add_argument("--static-batch", type=int, default=32, help="largest static batch")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prompt-lengths", default="1,4096", help="prompt lengths whose TTFT to compare ('' skips it)"
    )
    parser.add_argument("--prompt-rounds", type=int, default=9, help="requests per prompt length and reading")
    parser.add_argument(
        "--no-prefill",
        action="store_true",
        help="decode with prompts read step by step, as versions without a prefill signature are",
    )
    args = parser.parse_args(list(argv))
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or _tiny_model(Path(scratch))
        runtime = TextRuntime(model_dir, DeviceInfo("/CPU:0", "CPU"))
        runtime.warm_up([1, 8, 32, 64])
        rows = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            count = args.requests or max(64, 4 * concurrency)
            budgets = [
                int(b) for b in np.random.RandomState(args.seed).randint(MIN_TOKENS, MAX_TOKENS + 1, count)
            ]
            for mode in args.modes.split(","):
                rows.append(
                    asyncio.run(
                        _measure(runtime, mode, concurrency, budgets, args.static_batch, not args.no_prefill)
                    )
                )
                print(f"{mode} at {concurrency}: {rows[-1].tokens_per_s:.0f} tokens/s", file=sys.stderr)
        lengths = [int(n) for n in args.prompt_lengths.split(",") if n.strip()]
        prompt_rows = _prompt_rows(runtime, lengths, args.prompt_rounds, args.seed) if lengths else []
    print(f"model: {model_dir}\n")
    print(_table(rows))
    for line in _goals(rows):
        print(f"\n{line}")
    if prompt_rows:
        print(f"\n{_prompt_table(prompt_rows)}")
        longest = max(row.prompt_chars for row in prompt_rows)
        read = {(row.reading, row.prompt_chars): row.ttft_p50_s for row in prompt_rows}
        if ("prefill", longest) in read and len(lengths) > 1:
            ratio = read["prefill", longest] / read["prefill", min(lengths)]
            print(f"\nprefill TTFT at {longest} chars / at {min(lengths)}: {ratio:.1f}x (goal <= 5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
