"""The status a client's streaming call ended with, as the server sent it.

grpc.aio loses it in one race: the server ends a call (it refuses an update at its
header, or has no such method) while the client's next message is on its way; the
status arrives, then the write fails, and grpc sets the call's status to INTERNAL
"Internal error from Core" over the server's (its `set_internal_error`; seen in 5 of 30
refused 24 MiB updates on loopback). The client would take a refusal for a connection
cut off. `ServerStatus` notes the first status a call ends with; `server_error` gives
that one in place of grpc's failed write.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

FAILED_WRITE_DETAILS = "Internal error from Core"  # grpc's words for a failed write


class ServerStatus:
    """Notes the status ``call`` ends with first (`grpc.aio.Call.add_done_callback`)."""

    def __init__(self, call: Any) -> None:
        self.first: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._note)

    def _note(self, call: Any) -> None:
        # The callback runs as the status is set: the call's accessors answer at once
        code, details = _now(call.code()), _now(call.details())
        metadata = _now(call.trailing_metadata())
        if code is not None and code is not grpc.StatusCode.OK:
            empty = grpc.aio.Metadata()
            self.first = grpc.aio.AioRpcError(code, empty, metadata or empty, details)

    def server_error(self, error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        """The status the server sent in place of ``error``, if ``error`` is grpc's failed
        write over it; else ``error`` (a connection cut mid-write stays what it is)."""
        if failed_write(error) and self.first is not None and not failed_write(self.first):
            return self.first
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
