"""Token buckets by name: how often one peer address or one credential may do something.

Joins and logins are limited per peer address and per credential (enrolment key, user
name), so that neither one machine nor one leaked key can flood the registry or guess
passwords at speed. The buckets themselves are bounded: the least recently used one goes
when a new name arrives at the limit (it has most likely refilled by then anyway).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fedgate.errors import ConfigError, RateLimited

MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Rate:
    """At most ``burst`` at once, then ``per_s`` a second on average."""

    burst: int
    per_s: float

    def __post_init__(self) -> None:
        if self.burst < 1 or not (math.isfinite(self.per_s) and self.per_s > 0):
            raise ConfigError(f"a rate needs burst >= 1 and per_s > 0, got {self}")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """One token bucket per name (a peer address, a key id...), for one kind of call."""

    def __init__(
        self,
        rate: Rate,
        what: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self.rate = rate
        self.what = what  # e.g. "joins from peer": names the limit in the refusal
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, name: str) -> None:
        """Spend one token of ``name``'s bucket, or raise `RateLimited`."""
        wait_s = self._spend(name)
        if wait_s > 0:
            raise RateLimited(
                f"too many {self.what} {name!r} (at most {self.rate.burst} at once, "
                f"{self.rate.per_s:g}/s after); retry in {wait_s:.1f}s"
            )

    def _spend(self, name: str) -> float:
        """0 if a token was spent, else the seconds until one is there."""
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._buckets.popitem(last=False)
            bucket = self._buckets[name] = _Bucket(float(self.rate.burst), now)
        else:
            self._buckets.move_to_end(name)
            refill = (now - bucket.updated) * self.rate.per_s
            bucket.tokens = min(float(self.rate.burst), bucket.tokens + refill)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate.per_s

    def __len__(self) -> int:
        return len(self._buckets)
