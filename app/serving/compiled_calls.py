"""The model call chosen by measurement on the machine that serves: XLA-compiled per batch bucket where it is faster.

Which call of a generator is fastest depends on the CPU: on one machine XLA's compiled call made twice the images
per second of TensorFlow's own at batch 64 and matched it at batch 1, on another it was slower. So nothing is
assumed. A `BucketedCall` starts as the version's plain call (`signature_calls.signature_call`); once the version
serves, `tune` compiles the signature with XLA for each batch bucket (fixed sizes, so compilations are bounded and
shapes stay fixed for accelerators), checks that the compiled call answers as the plain one (within one pixel
level: XLA may sum floats in another order), and times both on warm-up batches: the plain call at the smallest
and the largest size the bucket serves, the compiled call at the bucket's size. Batches the compiled call, padded
to the bucket, serves faster than the plain call would (the plain call's time taken as linear between the two
sizes timed) switch to it: all of a bucket where it wins even for the smallest batch, the larger batches of one
where it wins only for those. The padding rows are zeros, and are cut off the answer.

Tuning runs on its own daemon thread after the version is ready, so it costs no start-up time; its decisions are
kept in a small JSON cache keyed by the machine (CPU model and flags), the TensorFlow version, the version's files
and the thread count, so a restart compiles only the buckets that won and measures nothing.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import logging
import math
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.serving.signature_calls import SignatureCall

logger = logging.getLogger(__name__)

CompiledCalls = Literal["auto", "off"]
# Batch buckets tried for compiled calls, up to the version's largest batch (which is always one).
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Timed calls per candidate, alternating, after one untimed call each; the fastest of each is compared: other
# work on the machine (other versions loading, requests being served) only ever adds time, so the fastest call
# is the closest to each call's own cost, where a median moves with whatever else ran.
_TIMED_CALLS = 9
# A compiled call must be at least this much faster to be chosen: a tie keeps TensorFlow's own call.
_MIN_GAIN = 0.95
_MAX_LEVEL_DIFFERENCE = 1
_CACHE_FORMAT = 2

Probe = Callable[[int], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BucketChoice:
    """What was measured for one batch bucket, and which call serves it."""

    bucket: int
    smallest: int  # the smallest batch the bucket serves
    call: Literal["compiled", "plain"]
    # The smallest batch the compiled call serves (batches from `smallest` up to this one take the plain call).
    compiled_from: int | None = None
    plain_ms: list[float] | None = None  # at `smallest` and at `bucket` images
    compiled_ms: float | None = None
    reason: str = ""


def bucket_sizes(max_batch_size: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> list[int]:
    """The buckets a version with batches of at most `max_batch_size` images compiles for."""
    return sorted({size for size in buckets if size < max_batch_size} | {max_batch_size})


class BucketedCall:
    """A signature's call: the plain call, or per batch bucket a padded compiled call chosen by `tune`."""

    def __init__(self, signature: Any, plain: SignatureCall, *, max_batch_size: int) -> None:
        self._signature = signature
        self._plain = plain
        self.buckets = bucket_sizes(max_batch_size)
        # Bucket -> (the smallest batch it serves compiled, the compiled call); replaced whole when a bucket switches,
        # so a call in flight reads one consistent mapping.
        self._compiled: dict[int, tuple[int, SignatureCall]] = {}
        self.choices: list[BucketChoice] = []
        # plain (not tuned), waiting (for another version's tuning), measuring, chosen
        self.state = "plain"
        self._stopped = threading.Event()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        compiled = self._compiled
        if compiled:
            rows = len(next(iter(inputs.values())))
            index = bisect.bisect_left(self.buckets, rows)
            if index < len(self.buckets):
                entry = compiled.get(self.buckets[index])
                if entry is not None and rows >= entry[0]:
                    return entry[1](inputs)
        return self._plain(inputs)

    def describe(self) -> dict[str, Any]:
        """What `/models` shows: whether tuning has finished, and each bucket's call and measured times."""
        return {"state": self.state, "buckets": [asdict(choice) for choice in self.choices]}

    def stop(self) -> None:
        """Stop a tuning in progress after its current bucket (the version is being unloaded)."""
        self._stopped.set()

    def run_tuning(self, probe: Probe, cache: ChoiceCache | None, name: str) -> None:
        """`tune`, logging its outcome; a failure leaves the plain call serving every bucket."""
        self.state = "measuring"
        try:
            self.tune(probe, cache)
        except Exception:  # tuning is an optimisation: the plain call keeps serving
            logger.exception("choosing the model call of %s failed; it keeps TensorFlow's own call", name)
            self._compiled = {}
            self.state = "plain"
            return
        chosen = [choice.bucket for choice in self.choices if choice.call == "compiled"]
        logger.info(
            "%s: compiled calls serve batch buckets %s, the plain call the others", name, chosen or "none"
        )

    def tune(self, probe: Probe, cache: ChoiceCache | None = None) -> list[BucketChoice]:
        """Measure (or read from `cache`) each bucket's call and switch the buckets the compiled call wins."""
        known = cache.read() if cache is not None else None
        choices = []
        smallest = 1
        for bucket in self.buckets:
            if self._stopped.is_set():
                break
            remembered = (known or {}).get(bucket)
            choice = self._choose(bucket, smallest, probe, remembered)
            choices.append(choice)
            self.choices = [*choices]
            smallest = bucket + 1
        if cache is not None and known is None and not self._stopped.is_set():
            cache.write(choices)
        self.state = "chosen"
        return choices

    def _choose(
        self, bucket: int, smallest: int, probe: Probe, remembered: BucketChoice | None
    ) -> BucketChoice:
        if remembered is not None and remembered.call == "plain":
            return remembered
        compiled = _compiled_call(self._signature, bucket)
        full = probe(bucket)
        difference = _level_difference(_as_numpy(compiled(full)), _as_numpy(self._plain(full)))
        if difference > _MAX_LEVEL_DIFFERENCE:
            return BucketChoice(bucket, smallest, "plain", reason=f"answers differ by {difference} levels")
        if remembered is None:
            remembered = _timed_choice(bucket, smallest, self._plain, compiled, probe)
        if remembered.call == "compiled":
            self._compiled = {**self._compiled, bucket: (remembered.compiled_from or smallest, compiled)}
        return remembered


def _timed_choice(
    bucket: int, smallest: int, plain: SignatureCall, compiled: SignatureCall, probe: Probe
) -> BucketChoice:
    """Time the plain call at both ends of the bucket and the compiled call at its size; the compiled call serves
    the batches it is faster for (by `_MIN_GAIN`), taking the plain call's time as linear in between."""
    full = probe(bucket)
    plain_full, compiled_s = _fastest_times([plain, compiled], full)
    plain_small = plain_full if smallest == bucket else _fastest_times([plain], probe(smallest))[0]
    crossover = _crossover(smallest, bucket, plain_small, plain_full, compiled_s / _MIN_GAIN)
    plain_ms = [round(plain_small * 1000, 3), round(plain_full * 1000, 3)]
    compiled_ms = round(compiled_s * 1000, 3)
    if crossover is None:
        return BucketChoice(bucket, smallest, "plain", None, plain_ms, compiled_ms, "not faster")
    reason = "faster" if crossover == smallest else f"faster from {crossover} images"
    return BucketChoice(bucket, smallest, "compiled", crossover, plain_ms, compiled_ms, reason)


def _crossover(
    smallest: int, bucket: int, plain_small: float, plain_full: float, compiled: float
) -> int | None:
    """The smallest batch in [smallest, bucket] whose plain time (linear between the two measured) exceeds
    `compiled`; None when none does."""
    if compiled >= plain_full:
        return None
    if compiled < plain_small or bucket == smallest:
        return smallest
    fraction = (compiled - plain_small) / (plain_full - plain_small)
    return min(bucket, smallest + math.floor(fraction * (bucket - smallest)) + 1)


def _fastest_times(calls: list[SignatureCall], inputs: dict[str, np.ndarray]) -> list[float]:
    """Each call's fastest seconds over interleaved runs, after one untimed run each."""
    times: list[list[float]] = [[] for _ in calls]
    for call in calls:
        _as_numpy(call(inputs))
    for _ in range(_TIMED_CALLS):
        for index, call in enumerate(calls):
            started = time.perf_counter()
            _as_numpy(call(inputs))
            times[index].append(time.perf_counter() - started)
    return [min(samples) for samples in times]


def _compiled_call(signature: Any, bucket: int) -> SignatureCall:
    """`signature` compiled with XLA for batches of exactly `bucket` rows; smaller batches are padded with zeros."""
    import tensorflow as tf

    specs = list(tf.nest.flatten(signature.structured_input_signature))
    names = [spec.name for spec in specs]
    fixed = [tf.TensorSpec([bucket, *spec.shape.as_list()[1:]], spec.dtype, name=spec.name) for spec in specs]

    @tf.function(input_signature=fixed, jit_compile=True)
    def run(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        return dict(signature(**dict(zip(names, tensors, strict=True))))

    concrete = run.get_concrete_function()

    def call(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = len(inputs[names[0]])
        tensors = [tf.constant(_padded(inputs[spec.name], bucket), dtype=spec.dtype) for spec in specs]
        outputs = concrete(*tensors)
        return {name: np.asarray(value)[:rows] for name, value in outputs.items()}

    return call


def _padded(array: np.ndarray, rows: int) -> np.ndarray:
    if len(array) == rows:
        return array
    padding = np.zeros((rows - len(array), *array.shape[1:]), dtype=array.dtype)
    return np.concatenate([array, padding])


def _as_numpy(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in outputs.items()}


def _level_difference(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> int:
    if actual.keys() != expected.keys():
        return 1 << 30
    worst = 0
    for name, wanted in expected.items():
        got = actual[name]
        if got.shape != wanted.shape:
            return 1 << 30
        worst = max(worst, int(np.abs(got.astype(np.int64) - wanted.astype(np.int64)).max(initial=0)))
    return worst


class ChoiceCache:
    """Tuning decisions on disk, keyed by machine, TensorFlow, the version's files and the thread count.

    The key (the version's files listed and stat'ed, the machine described) is worked out at the first read or
    write, on the tuning thread, not where the cache is made: that is the event loop, as a version starts.
    """

    def __init__(self, folder: Path, version_path: Path, threads: int) -> None:
        self._folder = Path(folder)
        self._version_path = Path(version_path)
        self._threads = threads

    @functools.cached_property
    def file(self) -> Path:
        return self._folder / f"{_cache_key(self._version_path, self._threads)}.json"

    def read(self) -> dict[int, BucketChoice] | None:
        try:
            payload = json.loads(self.file.read_text())
            if payload.get("format") != _CACHE_FORMAT:
                return None
            return {int(item["bucket"]): BucketChoice(**item) for item in payload["buckets"]}
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def write(self, choices: list[BucketChoice]) -> None:
        payload = {"format": _CACHE_FORMAT, "buckets": [asdict(choice) for choice in choices]}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.file.with_suffix(".tmp")
            temporary.write_text(json.dumps(payload, indent=1))
            temporary.replace(self.file)
        except OSError as error:  # a read-only cache folder only costs a measurement at the next start
            logger.debug("model-call choices not cached in %s: %s", self.file.parent, error)


@functools.cache
def machine_description() -> dict[str, str]:
    """This machine as the cache keys it: the CPU model and flags (Linux), the architecture and TensorFlow."""
    import tensorflow as tf

    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    gpus = ",".join(device.name for device in tf.config.list_physical_devices("GPU"))
    return {
        "cpu": model or platform.processor(),
        "flags": flags,
        "machine": platform.machine(),
        "gpu": gpus,
        "tensorflow": tf.__version__,
    }


def _cache_key(version_path: Path, threads: int) -> str:
    digest = hashlib.sha256(json.dumps(machine_description(), sort_keys=True).encode())
    digest.update(f"threads={threads};format={_CACHE_FORMAT}".encode())
    for file in sorted(path for path in version_path.rglob("*") if path.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(version_path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]
