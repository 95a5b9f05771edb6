"""Status streams that end in good order when their server stops.

Both adapters serve `FederationService.watch` as a stream (REST: server-sent events on
``/api/v1/status/watch``; gRPC: ``Operator.WatchStatus``) that lasts until the run ends,
or until the server stops, which may come first. Left alone, a stopping server waits out
its grace period for such a stream and then cancels it. `end_status_streams` ends every
stream over a service at once: whoever stops the servers calls it first, and watchers see
the normal end of their stream without delay. A stream cancelled all the same ends
without a traceback (each adapter sees to that).

The closing signal is kept per service, weakly, so that a service served again after a
stop (tests, a restarted gateway in one process) gets fresh streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from weakref import WeakKeyDictionary

from fedgate.core.messages import FederationStatus
from fedgate.core.service import FederationService

_closing: WeakKeyDictionary[FederationService, asyncio.Event] = WeakKeyDictionary()


def end_status_streams(service: FederationService) -> None:
    """End every status stream open over ``service`` (the servers are about to stop)."""
    closing = _closing.pop(service, None)
    if closing is not None:
        closing.set()


async def status_stream(service: FederationService) -> AsyncIterator[FederationStatus]:
    """``service.watch()``, until the run ends or `end_status_streams` is called."""
    closing = _closing.setdefault(service, asyncio.Event())
    watch = service.watch()
    ended = asyncio.create_task(closing.wait())
    step: asyncio.Task[FederationStatus | None] | None = None
    try:
        while True:
            step = asyncio.create_task(_next(watch))
            await asyncio.wait({step, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                yield service.status()  # the server is stopping: where the run stands now
                return
            status = step.result()
            if status is None:
                return  # the run has ended
            yield status
    finally:
        for waiting in (ended, step):
            if waiting is not None and not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _next(watch: AsyncIterator[FederationStatus]) -> FederationStatus | None:
    """The next status, or None at the end of the stream."""
    return await anext(watch, None)
