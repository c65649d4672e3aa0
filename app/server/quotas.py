"""Quotas per API key: a token bucket per client and unit, charged with each request's size; off unless set.

Three units are counted: `images` (every image a model makes or reads: generated images, interpolation frames,
uploads a VAE encodes; an image URL answered from the cache costs nothing), `clips` (every clip a sound generator
makes) and `tokens` (the text a request may write: n × `max_new_tokens`, or the sum of n × `max_tokens` over an
OpenAI request's prompts). A limit is a rate
and a burst: the bucket holds up to `burst` and refills at `per_s`; a request of size s takes s from it, or is
refused with 429 and `Retry-After` = ⌈(s − level) / per_s⌉ seconds, the time until the bucket holds s. A request
larger than the burst could never pass: it is refused with 429 too (code `larger_than_quota`), a message that says
so and no `Retry-After`. Work refused when it is queued (a full queue, a drain) gives its charge back.

Limits are written as options after a key in the keys file, and in `GENSERVE_QUOTA_DEFAULT` for the units a key's
line does not name:

    team-a: KEY images_per_s=20 images_burst=40 tokens_per_s=500 tokens_burst=4000
    team-b: KEY tokens_per_s=unlimited

`images_per_s` and `tokens_per_s` take a positive number or `unlimited`; a burst defaults to one second of the
rate (at least 1). A line without options is a key as before. Quotas need API keys (without a keys file no
request names a client) and are kept per process: with N replicas behind a balancer, a client gets N times them.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.server.errors import LargerThanQuota, QuotaExceeded

if TYPE_CHECKING:
    from app.metrics import Metrics

IMAGES = "images"
CLIPS = "clips"
TOKENS = "tokens"
UNITS = (IMAGES, CLIPS, TOKENS)
UNLIMITED = "unlimited"
_OPTIONS = tuple(f"{unit}_{part}" for unit in UNITS for part in ("per_s", "burst"))
# A wait computed as 1.0000000001 s is one second, not two.
_ROUNDING_S = 1e-9


@dataclass(frozen=True)
class Limit:
    """A bucket's size (`burst`) and how fast it refills (`per_s`)."""

    per_s: float
    burst: float


# The limit of each unit a quota names (None: no limit); a unit it does not name follows the default.
Quota = Mapping[str, Limit | None]


@dataclass(frozen=True)
class Client:
    """Who a request comes from: its key's name, and the quota written on its key's line."""

    name: str
    quota: Quota = field(default_factory=dict)


# The client of the request or gRPC call being served: set by the API-key middleware and the gRPC call wrapper.
current_client: contextvars.ContextVar[Client | None] = contextvars.ContextVar("current_client", default=None)


def parse_quota(options: str) -> dict[str, Limit | None]:
    """Each unit's limit from space-separated options (`images_per_s=20 images_burst=40 tokens_per_s=500`); a bad
    option is a ValueError that names it."""
    values: dict[str, str] = {}
    for option in options.split():
        name, equals, value = option.partition("=")
        if not equals or name not in _OPTIONS:
            expected = ", ".join(f"{known}=N" for known in _OPTIONS)
            raise ValueError(f"unknown quota option {option!r}; expected {expected}")
        if name in values:
            raise ValueError(f"{name} is given twice")
        values[name] = value
    return {unit: _limit(unit, values) for unit in UNITS if any(key.startswith(unit) for key in values)}


def _limit(unit: str, values: dict[str, str]) -> Limit | None:
    rate, burst = values.get(f"{unit}_per_s"), values.get(f"{unit}_burst")
    if rate is None:
        raise ValueError(f"{unit}_burst needs {unit}_per_s")
    if rate == UNLIMITED:
        if burst is not None:
            raise ValueError(f"{unit}_burst needs a {unit}_per_s limit, not {UNLIMITED}")
        return None
    per_s = _number(f"{unit}_per_s", rate, at_least_one=False)
    size = (
        _number(f"{unit}_burst", burst, at_least_one=True)
        if burst is not None
        else max(1.0, math.ceil(per_s))
    )
    return Limit(per_s, size)


def _number(name: str, text: str, *, at_least_one: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value >= 1 if at_least_one else value > 0)):
        wanted = "a number of at least 1" if at_least_one else f"a positive number or {UNLIMITED}"
        raise ValueError(f"{name} must be {wanted}, got {text!r}")
    return value


class _Bucket:
    """One client's bucket of one unit."""

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self.level = limit.burst
        self.updated = now

    def level_at(self, now: float) -> float:
        return min(self.limit.burst, self.level + max(0.0, now - self.updated) * self.limit.per_s)

    def take(self, amount: float, now: float) -> float:
        """Take `amount`: 0.0 when taken, else the seconds until the bucket will hold it (nothing is taken)."""
        self.level, self.updated = self.level_at(now), now
        if amount <= self.level:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.limit.per_s

    def give_back(self, amount: float) -> None:
        self.level = min(self.limit.burst, self.level + amount)

    def change(self, limit: Limit, now: float) -> None:
        """A new limit from a re-read keys file: what the bucket holds carries over, within the new burst."""
        level = self.level_at(now)
        self.limit, self.updated = limit, now
        self.level = min(level, limit.burst)


@dataclass(frozen=True)
class Charge:
    """What one request took from its client's bucket, given back when its work is refused before it runs."""

    bucket: _Bucket
    amount: float

    def refund(self) -> None:
        self.bucket.give_back(self.amount)


class Quotas:
    """Every client's buckets, charged by the services that know a request's size (on the event loop)."""

    def __init__(
        self, default: Quota, metrics: Metrics | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._default = default
        self._metrics = metrics
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def charge(self, unit: str, amount: int) -> Charge | None:
        """Take `amount` of `unit` from the current client's bucket; QuotaExceeded (429) when it holds too little,
        LargerThanQuota when it never could. None when the request has no client or the client no limit."""
        client = current_client.get()
        if client is None:
            return None
        limit = client.quota[unit] if unit in client.quota else self._default.get(unit)
        if limit is None:
            return None
        now = self._clock()
        bucket = self._bucket(client.name, unit, limit, now)
        if amount > limit.burst:
            self._refused(client.name, unit)
            raise LargerThanQuota(
                f"this request needs {amount} {unit} at once, more than the quota of key {client.name!r} ever "
                f"allows ({limit.burst:g} at once, {limit.per_s:g} per second): ask for fewer"
            )
        wait_s = bucket.take(amount, now)
        if wait_s > 0:
            self._refused(client.name, unit)
            raise QuotaExceeded(
                f"key {client.name!r} is over its quota of {limit.per_s:g} {unit} per second (burst "
                f"{limit.burst:g}); this request needs {amount}",
                retry_after_s=max(1, math.ceil(wait_s - _ROUNDING_S)),
            )
        return Charge(bucket, amount)

    def _bucket(self, name: str, unit: str, limit: Limit, now: float) -> _Bucket:
        bucket = self._buckets.get((name, unit))
        if bucket is not None:
            if bucket.limit != limit:
                bucket.change(limit, now)
            return bucket
        created = self._buckets[(name, unit)] = _Bucket(limit, now)
        if self._metrics is not None:
            self._metrics.track_quota(name, unit, lambda: created.level_at(self._clock()))
        return created

    def _refused(self, name: str, unit: str) -> None:
        if self._metrics is not None:
            self._metrics.quota_refused(name, unit)
