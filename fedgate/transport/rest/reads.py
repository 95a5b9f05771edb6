"""The REST client's connections, read in large pieces.

httpx (through httpcore) reads a response 64 KiB at a time, and every piece then passes
h11's parser and httpcore's and httpx's iterators: 1,600 rounds of Python for a 100 MB
model, which, with h11's and httpx's copies, bound a ResNet-50 download on loopback
(458 to 478 MB/s against ~1,450 for plain TCP). httpcore's network backends are its seam
for the socket layer: this one hands every read whatever the socket has, up to
`READ_BYTES` (asyncio delivers at most 256 KiB a time), so the same download takes a
quarter of the pieces (546 to 638 MB/s over six runs). Nothing else changes: the bytes,
their order and every timeout are httpcore's.
"""

# httpcore's network interface takes its timeouts as arguments:
# ruff: noqa: ASYNC109

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

READ_BYTES = 1 << 20
# httpx's own defaults for a client's connection pool
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class LargeReadStream(httpcore.AsyncNetworkStream):
    """A connection whose reads take up to ``read_bytes`` (never less than asked for)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, read_bytes: int) -> None:
        self._inner = inner
        self._read_bytes = read_bytes

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, self._read_bytes), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return LargeReadStream(tls, self._read_bytes)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class LargeReadBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asyncio backend, its connections read in large pieces."""

    def __init__(self, read_bytes: int = READ_BYTES) -> None:
        self._inner = httpcore.AnyIOBackend()
        self.read_bytes = read_bytes
        self.connections = 0  # opened through this backend (tests check it is in use)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        self.connections += 1
        return LargeReadStream(stream, self.read_bytes)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        self.connections += 1
        return LargeReadStream(stream, self.read_bytes)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def large_read_pool(
    verify: ssl.SSLContext | bool, backend: LargeReadBackend
) -> httpcore.AsyncConnectionPool:
    """httpcore's connection pool (httpx's limits and TLS context), its connections opened
    through ``backend``. The REST client sends its requests to it directly (`RestTransport`)."""
    # one TLS context (loading the CAs takes ~20 ms)
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    return httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=LIMITS.max_connections,
        max_keepalive_connections=LIMITS.max_keepalive_connections,
        keepalive_expiry=LIMITS.keepalive_expiry,
        network_backend=backend,
    )


# httpcore's errors as httpx names them (httpx's transport maps them the same way), so
# that the client tells a failed request alike whichever layer it came through
HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


def as_httpx_error(error: Exception) -> httpx.TransportError | None:
    """``error`` as httpx would have raised it; None for an error httpcore does not define."""
    for kind, httpx_kind in HTTPX_ERRORS.items():  # the subclasses come first
        if isinstance(error, kind):
            return httpx_kind(str(error))
    return None
