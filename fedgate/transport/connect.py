"""Client transports by name."""

from __future__ import annotations

from collections.abc import Callable

from fedgate.core.transport import Transport
from fedgate.errors import ConfigError
from fedgate.transport.grpc.client import GrpcTransport
from fedgate.transport.rest.client import RestTransport
from fedgate.transport.tls import ClientTls


def _rest(server: str, tls: ClientTls | None) -> Transport:
    scheme = "https" if tls is not None else "http"
    return RestTransport(server if "://" in server else f"{scheme}://{server}", tls=tls)


def _grpc(server: str, tls: ClientTls | None) -> Transport:
    return GrpcTransport(server.removeprefix("grpc://"), tls=tls)


# a factory takes the server's address and the client's TLS settings (None: plain text)
TRANSPORTS: dict[str, Callable[[str, ClientTls | None], Transport]] = {
    "grpc": _grpc,
    "rest": _rest,
}


def connect(transport: str, server: str, tls: ClientTls | None = None) -> Transport:
    """A client transport to ``server`` (``host:port``; REST also takes a URL), over TLS
    when ``tls`` is given (REST: an https:// URL)."""
    try:
        factory = TRANSPORTS[transport]
    except KeyError:
        raise ConfigError(
            f"unknown transport {transport!r}; available: {', '.join(TRANSPORTS)}"
        ) from None
    return factory(server, tls)
