"""Writes to the run store, in order, on one thread of their own.

The federation's event loop never waits on a database: client transitions are buffered and
written in batches, at most once a second (or with the next round's commit, which writes
every client record anyway); a round's commit is awaited (the next round opens only once
the last one is durable: no client trains on a model the store does not have) but runs on
the writer thread; the round's evaluation follows it as a small write of its own, not
awaited. Batching matters: the writer shares the process (and its GIL) with decoding and
aggregation, and a transaction per transition cost a 4-client digits round ~15 ms where
one per round costs ~3 ms. One thread means one writer, in the order things happened,
which SQLite needs and PostgreSQL does not mind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from fedgate.core.messages import RunState
from fedgate.core.ports import (
    ClientEvent,
    ConfigChange,
    ModelVersion,
    RoundCommit,
    RoundEvaluation,
    RunMeta,
    RunSnapshot,
    RunStore,
    StoredClient,
)

log = logging.getLogger("fedgate.store")
T = TypeVar("T")
FLUSH_INTERVAL_S = 1.0  # the longest a client transition waits in the buffer while it is busy


class Recorder:
    def __init__(
        self, store: RunStore, run_id: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.run_id = run_id
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="fedgate-store")
        self._lock = threading.Lock()  # the buffer is filled on the loop, drained by the writer
        self._clients: dict[str, StoredClient] = {}
        self._events: list[ClientEvent] = []
        self._flush_queued = False
        self._clock = clock
        self._last_flush = clock()
        self.failures = 0  # background writes that failed (each logged)

    def create_run(self, meta: RunMeta, snapshot: RunSnapshot, model: ModelVersion) -> None:
        self._submit(self.store.create_run, meta, snapshot, model)

    def client_changed(self, client: StoredClient, event: ClientEvent) -> None:
        """Buffer a client's new record and the transition; written soon, in one batch."""
        with self._lock:
            self._clients[client.client_id] = client
            self._events.append(event)
        self.tick()

    def tick(self) -> None:
        """Write what is buffered if the last batch is older than FLUSH_INTERVAL_S (called on
        every change and by the federation's periodic watch, so nothing waits long)."""
        with self._lock:
            due = self._clock() - self._last_flush >= FLUSH_INTERVAL_S
            if self._flush_queued or not due or not (self._clients or self._events):
                return
            self._flush_queued = True
        self._submit(self._flush)

    def run_state(self, state: RunState) -> None:
        """A new phase, written at once: ``running`` is how a restarted server knows a
        round was open when the last one died (one small UPDATE per round)."""
        self._submit(self.store.set_run_state, self.run_id, state)

    def config_change(self, change: ConfigChange) -> None:
        self._submit(self.store.add_config_change, self.run_id, change)

    def commit_round_soon(self, commit: RoundCommit) -> None:
        """`commit_round` without waiting (for a caller that is not on the event loop)."""
        self._submit(self._commit, commit)

    async def commit_round(self, commit: RoundCommit) -> None:
        """Write a closed round in one transaction, after every buffered transition."""
        await asyncio.wrap_future(self._writer.submit(self._commit, commit))

    def evaluation(self, evaluation: RoundEvaluation) -> None:
        """A committed round's evaluation; written after everything submitted before it."""
        self._submit(self.store.record_evaluation, self.run_id, evaluation)

    async def flush(self) -> None:
        """Return once everything submitted so far is written (or has failed)."""
        await asyncio.wrap_future(self._writer.submit(lambda: None))

    def close(self) -> None:
        """Write what is buffered, then stop the writer thread (blocks until done)."""
        self._writer.submit(self._flush)
        self._writer.shutdown(wait=True)

    def _commit(self, commit: RoundCommit) -> None:
        self._flush()
        self.store.commit_round(commit)

    def _flush(self) -> None:
        with self._lock:
            clients, events = list(self._clients.values()), tuple(self._events)
            self._clients, self._events, self._flush_queued = {}, [], False
            self._last_flush = self._clock()
        if clients or events:
            self.store.save_clients(self.run_id, tuple(clients), events)

    def _submit(self, call: Callable[..., T], *args: object) -> None:
        future = self._writer.submit(call, *args)
        future.add_done_callback(self._log_failure)

    def _log_failure(self, future: Future[Any]) -> None:
        error = future.exception()
        if error is not None:
            self.failures += 1
            log.error("run %s: a write to the store failed: %s", self.run_id, error)
