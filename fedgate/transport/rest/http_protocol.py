"""uvicorn's httptools protocol with a deadline and a size limit on the request head.

Why httptools, not h11: its parser is C (llhttp), where h11 parses in Python and copies
every body byte four times on its way to the route (into its buffer, out of it twice,
into an event). Measured with the same fedgate server: a ResNet-50 upload (94 MB) took
107 ms against 142 ms (72 % against 53 % of plain loopback TCP), and a 10-client REST
round 41-42 ms of server CPU against 44-47 (`bench/cpu_per_round.py`, two pairs).

What h11 bounded and httptools does not, this protocol does:

- **Head size**: h11 refuses a head longer than its limit; httptools (as uvicorn runs
  it) has none, and gathers a header value however long it grows. Here a request whose
  head is longer than ``max_head_bytes`` is answered 431 and its connection closed, no
  request started: a head that has not ended after that many bytes read, or one that
  came whole and measures more (so the parser gathers at most one socket read, 256 KiB,
  past the limit).
- **Head deadline**: uvicorn times out idle keep-alive connections, but not a connection
  that opens and sends nothing, nor one that sends its request head a byte at a time: any
  byte cancels the keep-alive timer, and nothing else is armed until a response is sent.
  A few hundred such connections hold the server's connection slots forever. Here the
  head of every request must be complete within ``head_timeout_s`` of the connection
  opening (after TLS) or of the request's first byte, or the connection is closed.

Bodies are not covered: the upload routes bound their own reads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("fedgate.rest.http")

HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\n\r\n"
    b"request head too large; refused\n"
)


class LimitedHeadProtocol(HttpToolsProtocol):
    head_timeout_s: float = 10.0
    max_head_bytes: int = 8 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between a request's first byte (or none yet) and its head's end
        self._read_in_head = 0  # bytes read while in a head: bounds what the parser gathers
        self._head_size = 0  # the head's own bytes, as the parser hands them over
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a peer that never sends a byte is timed out too

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # nothing more is parsed on a refused connection
        if self._in_head:
            if self._head_timer is None:
                self._arm_head_timer()  # the first byte of a next request on a kept-alive one
            self._read_in_head += len(data)
        super().data_received(data)
        if self._in_head and self._read_in_head > self.max_head_bytes:
            self._refuse_head()  # a head not ended yet, its bytes gathered in the parser

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + len(b": \r\n")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        head_size, self._head_size, self._read_in_head = self._head_size, 0, 0
        if head_size > self.max_head_bytes:
            self._refuse_head()  # a head that came whole in one read: no request is started
        elif not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()
            self._in_head = True  # what comes next is the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _refuse_head(self) -> None:
        self._refused = True
        self._cancel_head_timer()
        if not self.transport.is_closing():
            log.debug("%s: request head over %d bytes; refused", self.client, self.max_head_bytes)
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            log.debug(
                "%s: request head not complete in %gs; closing", self.client, self.head_timeout_s
            )
            self.transport.close()


def protocol_with_head_limits(timeout_s: float, max_bytes: int) -> type[LimitedHeadProtocol]:
    """The protocol class to hand uvicorn (``Config(http=...)``) for these limits."""

    class Protocol(LimitedHeadProtocol):
        head_timeout_s = timeout_s
        max_head_bytes = max_bytes

    return Protocol
