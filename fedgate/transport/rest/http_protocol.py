"""uvicorn's h11 protocol with a deadline on the request head (slow-header defence).

uvicorn times out idle keep-alive connections, but not a connection that opens and sends
nothing, nor one that sends its request head a byte at a time: any byte cancels the
keep-alive timer, and nothing else is armed until a response is sent. A few hundred such
connections hold the server's connection slots forever. Here the head of every request
must be complete within ``head_timeout_s`` of the connection opening (after TLS) or of
the request's first byte, or the connection is closed. Bodies are not covered: the
upload routes bound their own reads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("fedgate.rest.http")


class HeadTimeoutH11Protocol(H11Protocol):
    head_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a peer that never sends a byte is timed out too

    def data_received(self, data: bytes) -> None:
        # h11 leaves IDLE when a whole request head has been parsed (or on an error)
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the first byte of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug(
                "%s: request head not complete in %gs; closing", self.client, self.head_timeout_s
            )
            self.transport.close()


def protocol_with_head_timeout(timeout_s: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class to hand uvicorn (``Config(http=...)``) for this deadline."""

    class Protocol(HeadTimeoutH11Protocol):
        head_timeout_s = timeout_s

    return Protocol
