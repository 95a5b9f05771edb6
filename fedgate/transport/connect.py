"""Client transports by name.

Each factory imports its adapter when called: a REST client process never loads gRPC, and
a gRPC one never loads httpx (tests/test_client_imports.py checks what a client loads).
"""

from __future__ import annotations

from collections.abc import Callable

from fedgate.core.transport import Transport
from fedgate.errors import ConfigError
from fedgate.transport.tls import ClientTls


def _rest(server: str, tls: ClientTls | None) -> Transport:
    from fedgate.transport.rest.client import RestTransport  # noqa: PLC0415 - see the docstring

    scheme = "https" if tls is not None else "http"
    return RestTransport(server if "://" in server else f"{scheme}://{server}", tls=tls)


def _grpc(server: str, tls: ClientTls | None) -> Transport:
    from fedgate.transport.grpc.client import GrpcTransport  # noqa: PLC0415 - see the docstring

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
