"""A clock that moves only when a test moves it, for the federation's deadlines and heartbeats.

`Federation(clock=...)` reads the time from it (deadlines, heartbeats, silences, a task's
``deadline_s``, a long-poll's end). Its loops still wait with real-time asyncio timeouts
(`fedgate.core.changes.Changes.wait`, `fedgate.core.scheduler.TICK_S`), so a moved clock
alone would be noticed only at their next tick; `advance` therefore also notifies the
federation, and every waiter wakes at once and re-checks at the new time.

So a test never sleeps: time passes exactly where it says and nowhere else, and a slow or
busy machine cannot make a deadline pass or a heartbeat expire that the test did not mean.
The flip side: with the clock standing still, a long-poll (`next_task`) ends only when a
task comes; ask with ``wait_s=0`` where a WAIT is expected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from fedgate.core.changes import Changes
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation


class Beating(Protocol):
    async def heartbeat(self) -> None: ...


START = 1_000.0  # any time will do; not 0, which could pass for "never" somewhere


class ManualClock:
    def __init__(self, start: float = START) -> None:
        self.now = start
        self._woken: list[Changes] = []

    def __call__(self) -> float:
        return self.now

    def federation(
        self, model: Mapping[str, torch.Tensor], config: RunConfig, **options: Any
    ) -> Federation:
        """A federation on this clock: advancing the clock wakes it."""
        federation = Federation(model, config, clock=self, **options)
        self._woken.append(federation.changes)
        return federation

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, wake the federations on this clock, and hand them
        the event loop for a moment to re-check at the new time (a round closed meanwhile
        may still be folding in a worker thread: wait for its outcome with `until`)."""
        assert seconds >= 0, "time does not go back"
        self.now += seconds
        for changes in self._woken:
            changes.notify()
        for _ in range(3):  # the woken waiters, then what they woke in turn
            await asyncio.sleep(0)

    async def advance_beating(
        self, seconds: float, clients: Sequence[Beating], every: float = 1.0
    ) -> None:
        """Move time on by ``seconds`` in steps of ``every``, each followed by a heartbeat
        of every one of ``clients``: they stay alive (a slow trainer is not a silent one)."""
        steps = round(seconds / every)
        assert steps * every == seconds, "advance in whole steps"
        for _ in range(steps):
            await self.advance(every)
            for client in clients:
                await client.heartbeat()
