"""The status a client's streaming call ended with, as the server sent it.

grpc.aio loses it in one race: the server ends a call (it refuses an update at its
header, or has no such method) while the client's next message is on its way; the write
fails, and grpc then sets the call's status to INTERNAL "Internal error from Core",
over the status the server sent if that came first (seen in 5 of 30 refused 24 MiB
updates on loopback), else until the server's arrives. The client would take a refusal
for a connection cut off. `ServerStatus` notes the first status a call ends with, and
`server_error` gives the server's: that one, or the one that replaces grpc's INTERNAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

FAILED_WRITE_DETAILS = "Internal error from Core"  # grpc's words for a failed write
WAIT_S = 1.0  # for the server's status to replace grpc's INTERNAL (a cut connection sends none)
LOOK_S = 0.005


class ServerStatus:
    """Notes the status ``call`` ends with first (`grpc.aio.Call.add_done_callback`)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self.first: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._note)

    def _note(self, call: Any) -> None:
        # The callback runs as the status is set: the call's accessors answer at once
        code, details = _now(call.code()), _now(call.details())
        metadata = _now(call.trailing_metadata())
        if code is not None and code is not grpc.StatusCode.OK:
            empty = grpc.aio.Metadata()
            self.first = grpc.aio.AioRpcError(code, empty, metadata or empty, details)

    async def server_error(self, error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        """The server's status in place of ``error``, if ``error`` is grpc's failed write."""
        if not failed_write(error):
            return error
        if self.first is not None and not failed_write(self.first):
            return self.first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline:
            await asyncio.sleep(LOOK_S)
            code, details = await self._call.code(), await self._call.details()
            if code is not grpc.StatusCode.INTERNAL or details != FAILED_WRITE_DETAILS:
                metadata = await self._call.trailing_metadata()
                return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), metadata, details)
        return error


def failed_write(error: grpc.aio.AioRpcError) -> bool:
    return error.code() is grpc.StatusCode.INTERNAL and error.details() == FAILED_WRITE_DETAILS


def _now(coroutine: Coroutine[Any, Any, T]) -> T | None:
    """The result of a coroutine that finishes without waiting (a done call's accessor);
    None, the coroutine closed, if it would wait."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    return None
