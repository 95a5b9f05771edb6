"""The REST client's HTTP: one aiohttp session (its connection pool), each request's answer
read whole, and every failure to get one raised as a fedgate error. A large answer of a
declared length (a model) is filled into one buffer as its pieces come (`Filling`), which
the decoder then shares: ResNet-50 down and decoded in 101 ms instead of 132-145, the
decoder's copy of the joined bytes (35-37 ms) gone.

Why aiohttp, not httpx: its response parser is C (llhttp) and its body reads keep the
socket's pieces until one join, where httpx reads through h11 (Python) and httpcore, which
copy every byte of a body four times after the socket's. Measured on loopback against the
fedgate server (a /tmp probe, the same server for both): a 154 KB model down took 0.76 ms
of client CPU through httpcore's pool and 0.21 ms through aiohttp (1.14 against 0.65 ms
wall); a 94 MB ResNet-50 came down at 570-670 MB/s against 790-970 (a raw socket reading
into one buffer: 940-1,320); uploads are the server's pace either way (880-910 MB/s).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import yarl

from fedgate.errors import TlsError, TransportError
from fedgate.transport.filling import FILL_ON_LOOP_BYTES, Filling

# httpx's pool size (what this client had before); connections kept idle for less than
# the fedgate server keeps them (uvicorn's keep-alive, `ConnectionLimits.http_keep_alive_s`
# = 5 s), so the client does not send on one the server is closing
MAX_CONNECTIONS = 100
KEEPALIVE_S = 4.0
# A task travels in a response header (`headers.TASK_HEADER`): more than aiohttp's 8 KiB
# default field, as h11 (this client's parser before) allowed a whole head of 16 KiB
MAX_FIELD_BYTES = 64 * 1024
# Body pieces kept before the socket is paused: aiohttp's 64 KiB default paused and
# resumed the socket every 128 KiB of a 100 MB model
READ_BUFFER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """An HTTP response, its body read whole (headers case-insensitive)."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]
    content: bytes | bytearray

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class HttpSession:
    """aiohttp's session, opened on the first request (it belongs to the running loop)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, dropped_hint: str = "") -> None:
        """``ssl_context`` None: the system's CAs for an https:// URL."""
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._dropped_hint = dropped_hint
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        body: bytes | AsyncIterator[bytes | memoryview] | None = None,
    ) -> Answer:
        """One request and its whole answer; a request that gets none raises a
        `TransportError` (a `TlsError` for a failed handshake). ``url`` is sent as given
        (already quoted)."""
        session = self._open()
        try:
            async with session.request(
                method,
                yarl.URL(url, encoded=True),
                headers=headers,
                data=body,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                content = await _body(response)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise http_failure(error, url, self._dropped_hint, timeout_s) from error
        return Answer(response.status, response.reason or "", response.headers, content)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl, limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # models are sent as they are: no compression asked for, none undone
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
                max_field_size=MAX_FIELD_BYTES,
                read_bufsize=READ_BUFFER_BYTES,
            )
        return self._session


async def _body(response: aiohttp.ClientResponse) -> bytes | bytearray:
    """The response's body: a large one of a declared size filled into one buffer as its
    pieces come (`Filling`: handed over, a decoder shares it), any other read whole."""
    size = response.content_length
    if size is None or size < FILL_ON_LOOP_BYTES:
        return await response.read()
    try:
        filling = Filling(size)
    except MemoryError:
        raise TransportError(f"no memory for a {size}-byte answer") from None
    async for piece in response.content.iter_any():
        filling.add(piece)  # aiohttp stops at the declared length, and fails a short body
    return await filling.result()


def http_failure(
    error: aiohttp.ClientError | TimeoutError, url: str, dropped_hint: str, timeout_s: float
) -> TransportError:
    """The fedgate error for a request that got no response; TLS failures told as such."""
    cause = ssl_error_in(error)
    if cause is not None:
        origin = str(yarl.URL(url, encoded=True).origin())
        return TlsError(
            f"TLS handshake with {origin} failed ({cause}): check that --tls-ca names the "
            "CA that signed the server's certificate, that the certificate names the host, "
            "and that the server speaks TLS"
        )
    if isinstance(error, TimeoutError):
        return TransportError(f"HTTP request failed: no answer within {timeout_s:g} s")
    failure = f"HTTP request failed: {type(error).__name__}: {error}"
    dropped = aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError
    connecting = isinstance(error, aiohttp.ClientConnectorError)  # a ClientOSError too
    if isinstance(error, dropped) and not connecting and dropped_hint:
        return TransportError(f"{failure} ({dropped_hint})")
    return TransportError(failure)


def ssl_error_in(error: BaseException) -> ssl.SSLError | None:
    """The ssl error somewhere in an exception's chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
