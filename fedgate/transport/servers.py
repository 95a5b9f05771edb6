"""Server adapters by name: the seam through which one federation is served on the wire.

A `ServerAdapter` starts on a `FederationService` with `ServerSettings`, returns the
address it bound, and stops with a grace period. `SERVER_ADAPTERS` maps each transport's
name to a factory of fresh adapters; the gateway, the launcher, `sim` and the tests
iterate it, so a third transport is one module plus one entry here.

The factories import their adapter when called, not here: this module is imported by
the client side too (`fedgate.run.simulation`, `fedgate.run.launch`), and `fedgate client`
processes must not pay for loading grpc's server, FastAPI and uvicorn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fedgate.errors import ConfigError
from fedgate.transport.connection_limits import ConnectionLimits
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts
from fedgate.transport.tls import ServerTls

if TYPE_CHECKING:
    from fedgate.core.service import FederationService


@dataclass(frozen=True)
class Extensions:
    """What the adapters serve beside the federation (the dashboard, inference, metrics),
    handed over by the gateway without the transport layer knowing what they are.

    - ``rest``: each is called with the REST adapter's FastAPI app once its own routes are
      in (to include routers, add middleware);
    - ``grpc``: each is called with the `grpc.aio.Server` before it starts (to add
      servicers); ``grpc_interceptors`` wrap every call (metrics)."""

    rest: tuple[Callable[[Any], None], ...] = ()
    grpc: tuple[Callable[[Any], None], ...] = ()
    grpc_interceptors: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ServerSettings:
    """What every server adapter is started with."""

    admin_token: str  # the operator API's bootstrap credential
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    max_update_bytes: int = 1 << 30
    tls: ServerTls | None = None  # read and checked already; None: plain text
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    upload_timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS
    extensions: Extensions = field(default_factory=Extensions)


class ServerAdapter(Protocol):
    """One transport's server. An instance serves at most once: start, then stop."""

    @property
    def name(self) -> str: ...

    async def start(self, service: FederationService, settings: ServerSettings) -> str:
        """Listen on ``settings.host``:``settings.port`` and serve ``service``; returns
        the address clients of this transport connect to (its port is the one bound)."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop listening; calls in progress get ``grace_s`` to finish. A no-op if the
        adapter never started or has stopped already."""
        ...


ServerAdapterFactory = Callable[[], ServerAdapter]


def _grpc() -> ServerAdapter:
    from fedgate.transport.grpc.server import GrpcServerAdapter  # noqa: PLC0415 - see above

    return GrpcServerAdapter()


def _rest() -> ServerAdapter:
    from fedgate.transport.rest.server import RestServerAdapter  # noqa: PLC0415 - see above

    return RestServerAdapter()


SERVER_ADAPTERS: dict[str, ServerAdapterFactory] = {
    "grpc": _grpc,
    "rest": _rest,
}


def server_adapter_names() -> list[str]:
    return list(SERVER_ADAPTERS)


def get_server_adapter(name: str) -> ServerAdapter:
    """A new, unstarted adapter for transport ``name``; unknown names list the available."""
    try:
        factory = SERVER_ADAPTERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown server transport {name!r}; available: {', '.join(SERVER_ADAPTERS)}"
        ) from None
    return factory()


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:50051``)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass  # a host name
    return f"{host}:{port}"


def port_of(address: str) -> int:
    """The port of an address an adapter returned (``host:port`` or a URL without a path)."""
    return int(address.rpartition(":")[2])
