"""Client transports by name."""

from __future__ import annotations

from collections.abc import Callable

from fedgate.core.transport import Transport
from fedgate.errors import ConfigError
from fedgate.transport.grpc.client import GrpcTransport
from fedgate.transport.rest.client import RestTransport


def _rest(server: str) -> Transport:
    return RestTransport(server if "://" in server else f"http://{server}")


def _grpc(server: str) -> Transport:
    return GrpcTransport(server.removeprefix("grpc://"))


TRANSPORTS: dict[str, Callable[[str], Transport]] = {"grpc": _grpc, "rest": _rest}


def connect(transport: str, server: str) -> Transport:
    """A client transport to ``server`` (``host:port``; REST also takes a URL)."""
    try:
        factory = TRANSPORTS[transport]
    except KeyError:
        raise ConfigError(
            f"unknown transport {transport!r}; available: {', '.join(TRANSPORTS)}"
        ) from None
    return factory(server)
