"""How the client loop waits out a server it cannot reach: backoff, and a log line per change.

A client retries for as long as it takes (or until `Backoff.give_up_after_s`): delays grow
exponentially up to a cap, with jitter, so that clients cut off together (a server
restart) do not all come back in the same instant. Logging every attempt of a long
outage would drown the log, so `Link` logs when trouble starts, when its kind changes
and when it is over, and each attempt in between only at DEBUG.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedgate.errors import ConfigError, FedgateError, TransportError

log = logging.getLogger("fedgate.client")
MAX_EXPONENT = 60  # 2**60 times any sensible initial delay is past every cap


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``initial_s`` doubling up to ``max_s``, each shortened by
    a random share of up to ``jitter``; ``give_up_after_s`` of failing in a row ends the
    wait (None: never)."""

    initial_s: float = 0.2
    max_s: float = 10.0
    jitter: float = 0.5
    give_up_after_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s or not math.isfinite(self.max_s):
            raise ConfigError(
                f"backoff needs 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"backoff jitter must be in [0, 1], got {self.jitter}")
        if self.give_up_after_s is not None and not self.give_up_after_s > 0:
            raise ConfigError(f"give_up_after_s must be > 0 or None, got {self.give_up_after_s}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt number ``attempt`` (0: the first)."""
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(attempt, MAX_EXPONENT))
        return ceiling * (1.0 - self.jitter * rng.random())


class Link:
    """The client's view of the server: fine, or in one kind of trouble since some time.

    ``trouble`` names the kind ("cannot reach the server", "the federation is full"...):
    a new kind is logged once, as is the end of the trouble; attempts are counted for the
    backoff and the give-up limit from the moment the trouble began.
    """

    def __init__(
        self,
        name: str,
        backoff: Backoff,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.backoff = backoff
        self.clock = clock
        self.rng = rng or random.Random()
        self.trouble = ""  # "": fine
        self._since = 0.0
        self._attempts = 0

    def failed(self, trouble: str, error: FedgateError) -> float:
        """Count a failed attempt; returns how long to wait before the next one. Raises
        a `TransportError` once the trouble has lasted ``give_up_after_s``."""
        self.noticed(trouble, error)
        waited = self.clock() - self._since
        limit = self.backoff.give_up_after_s
        if limit is not None and waited >= limit:
            raise TransportError(
                f"{self.name}: giving up after {limit:g}s: {trouble} ({error.message})"
            )
        delay = self.backoff.delay(self._attempts, self.rng)
        if limit is not None:  # the last attempt comes at the limit, not a wait past it
            delay = min(delay, limit - waited)
        self._attempts += 1
        log.debug(
            "%s: %s (%s); retry %d in %.2fs", self.name, trouble, error, self._attempts, delay
        )
        return delay

    def noticed(self, trouble: str, error: FedgateError) -> None:
        """Trouble seen without a retry to schedule (a heartbeat): logged if it is new."""
        if trouble == self.trouble:
            return
        self.trouble, self._since, self._attempts = trouble, self.clock(), 0
        limit = self.backoff.give_up_after_s
        until = f"for up to {limit:g}s" if limit is not None else "until it answers"
        log.warning(
            "%s: %s (%s); retrying %s, waits of up to %gs",
            *(self.name, trouble, error.message, until, self.backoff.max_s),
        )

    def succeeded(self) -> None:
        """A call went through: any trouble is over."""
        if self.trouble:
            log.warning(
                "%s: over after %.1fs: %s", self.name, self.clock() - self._since, self.trouble
            )
            self.trouble, self._attempts = "", 0
