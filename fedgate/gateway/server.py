"""One process, one event loop, one federation, served on every registered transport.

The gateway starts each adapter of `fedgate.transport.servers.SERVER_ADAPTERS` on the
same `FederationService` and stops them together; it knows no transport by its code, only
the registry's names. `grpc_port`, `http_port`, `grpc_target` and `http_url` remain for
the callers written before the registry; new code reads `addresses`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType

from fedgate.core.service import FederationService
from fedgate.transport.connection_limits import ConnectionLimits
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts
from fedgate.transport.servers import (
    SERVER_ADAPTERS,
    Extensions,
    ServerAdapter,
    ServerSettings,
    get_server_adapter,
    host_port,
    port_of,
)
from fedgate.transport.tls import ServerTls, TlsSettings, load_server_tls
from fedgate.transport.watch import end_status_streams

log = logging.getLogger("fedgate.gateway")

# The settings' port fields named before the registry, by transport; other transports'
# ports are in `GatewaySettings.ports` (0 when absent: any free port).
GRPC, REST = "grpc", "rest"  # the transports behind the compatibility attributes
PORT_FIELDS: Mapping[str, str] = MappingProxyType({GRPC: "grpc_port", REST: "http_port"})


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    grpc_port: int = 50051  # 0: any free port
    http_port: int = 8000  # 0: any free port
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    max_update_bytes: int = 1 << 30
    tls: TlsSettings | None = None  # None: plain text (fine on loopback only)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    upload_timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS
    ports: Mapping[str, int] = field(default_factory=dict)  # by transport; wins over the above
    extensions: Extensions = field(default_factory=Extensions)  # dashboard, inference, metrics

    @property
    def exposed_in_plain_text(self) -> bool:
        """Serving beyond this machine without TLS: tokens and models cross the network bare."""
        return self.tls is None and not is_loopback(self.host)

    def port_for(self, transport: str) -> int:
        """The port ``transport`` should listen on (0: any free port)."""
        if transport in self.ports:
            return self.ports[transport]
        legacy = PORT_FIELDS.get(transport)
        return int(getattr(self, legacy)) if legacy else 0

    def server_settings(self, transport: str, tls: ServerTls | None) -> ServerSettings:
        """What the adapter of ``transport`` starts with (``tls``: read and checked)."""
        return ServerSettings(
            admin_token=self.admin_token,
            host=self.host,
            port=self.port_for(transport),
            max_update_bytes=self.max_update_bytes,
            tls=tls,
            limits=self.limits,
            upload_timeouts=self.upload_timeouts,
            extensions=self.extensions,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class Gateway:
    """Serves a federation on every registered transport until `stop` (or the end of the
    `async with` block)."""

    def __init__(
        self, federation: FederationService, settings: GatewaySettings | None = None
    ) -> None:
        self.federation = federation
        self.settings = settings or GatewaySettings()
        self.addresses: dict[str, str] = {}  # transport -> the address it bound
        self._adapters: list[ServerAdapter] = []

    @property
    def grpc_port(self) -> int:
        return self._port(GRPC)

    @property
    def http_port(self) -> int:
        return self._port(REST)

    @property
    def grpc_target(self) -> str:
        return self.addresses.get(GRPC) or host_port(self.settings.host, self.grpc_port)

    @property
    def http_url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        fallback = f"{scheme}://{host_port(self.settings.host, self.http_port)}"
        return self.addresses.get(REST) or fallback

    def _port(self, transport: str) -> int:
        address = self.addresses.get(transport)
        return port_of(address) if address else 0

    async def start(self) -> None:
        """Start every registered adapter; if one fails, those started are stopped."""
        # certificate files are read and checked before any port binds
        tls = load_server_tls(self.settings.tls) if self.settings.tls is not None else None
        try:
            for name in list(SERVER_ADAPTERS):
                adapter = get_server_adapter(name)
                self._adapters.append(adapter)
                settings = self.settings.server_settings(name, tls)
                self.addresses[name] = await adapter.start(self.federation, settings)
        except BaseException:
            with contextlib.suppress(Exception):  # logged; the first error is the news
                await self._stop_adapters(0.0)
            self.addresses.clear()
            raise
        log.info("gateway: %s", ", ".join(f"{n} {a}" for n, a in self.addresses.items()))

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop every adapter at once (open calls get ``grace_s``), then the federation's
        background tasks."""
        end_status_streams(self.federation)  # watchers end now, not at the grace period
        try:
            await self._stop_adapters(grace_s)
        finally:
            await self.federation.close()

    async def _stop_adapters(self, grace_s: float) -> None:
        adapters, self._adapters = self._adapters, []
        outcomes = await asyncio.gather(
            *(adapter.stop(grace_s) for adapter in adapters), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        for error in errors:
            log.error("a server adapter failed to stop: %r", error)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()
