"""Change notification: waiters wake at the next change, and watchers see every client
transition, however close together they come.

A status is a snapshot: two changes a millisecond apart (``uploading`` then ``finished``)
would reach a watcher polling snapshots as the second alone. So every client transition
also goes into a bounded log with a sequence number, and a watcher is handed the
transitions since its last status with each one: values are coalesced, transitions never.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque

from fedgate.core.ports import ClientEvent

EVENT_LOG = 4096  # transitions kept for watchers that fall behind


class Changes:
    def __init__(self) -> None:
        self._changed = asyncio.Event()
        # waiters for run-level changes only (no client transition), by their turn
        self._run_waiters: dict[int, tuple[float, asyncio.Future[None]]] = {}
        self._turns = itertools.count()
        self._events: deque[tuple[int, ClientEvent]] = deque(maxlen=EVENT_LOG)
        self._seq = itertools.count(1)
        self.last_seq = 0
        self.notified = 0  # changes so far: a waiter that took this count misses none

    def notify(self) -> None:
        """Wake every waiter (long-polls, the round loop, watchers): the run changed (a
        round opened or closed, its phase, its config, a client dropped)."""
        waiters, self._run_waiters = self._run_waiters, {}
        for turn in sorted(waiters, key=lambda turn: (waiters[turn][0], turn)):
            future = waiters[turn][1]
            if not future.done():
                future.set_result(None)  # resumed in this order: the loop's queue is FIFO
        self._wake()

    def client_event(self, event: ClientEvent) -> None:
        """A client's transition: for watchers and the round loop, not task long-polls."""
        self.last_seq = next(self._seq)
        self._events.append((self.last_seq, event))
        self._wake()

    def _wake(self) -> None:
        self.notified += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def events_since(self, seq: int) -> tuple[ClientEvent, ...]:
        """Transitions after ``seq`` (the oldest may have been forgotten past EVENT_LOG)."""
        return tuple(event for number, event in self._events if number > seq)

    async def wait(self, at_most_s: float, since: int | None = None) -> None:
        """Return at the next change, or after ``at_most_s`` seconds; at once if there was
        a change after `notified` read ``since`` (one that came while the caller was busy
        elsewhere, as a watcher is between two statuses)."""
        if since is not None and since != self.notified:
            return
        await _within(self._changed, at_most_s)

    async def wait_for_run(self, at_most_s: float, first: float = 0.0) -> None:
        """Return at the next run-level change (`notify`), or after ``at_most_s`` seconds.
        Waiters woken by one change resume in order of ``first``, the largest first (then
        in the order they came).

        For task long-polls: a task comes only with such a change, and with ten clients
        each client transition woke every waiting long-poll for nothing (about 60 wake-ups
        a round, each re-authenticating). Their order is the order the round's tasks go
        out in, which on a busy machine is about the order the clients start training:
        the task long-poll passes the client's example count, so the longest training
        starts first and the round is not left waiting on it alone at its end."""
        turn = next(self._turns)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_waiters[turn] = (-first, future)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(at_most_s):
                    await future
        finally:
            self._run_waiters.pop(turn, None)


async def _within(event: asyncio.Event, at_most_s: float) -> None:
    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(at_most_s):
            await event.wait()
