"""Serve a Federation on real loopback servers (port 0) and hand out client transports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fedgate.core.federation import Federation
from fedgate.core.transport import Transport
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.connect import connect
from fedgate.transport.inproc import InProcTransport
from fedgate.transport.servers import SERVER_ADAPTERS

# every server transport of the registry, and the client-only in-process one
TRANSPORTS = [InProcTransport.name, *SERVER_ADAPTERS]
ADMIN_TOKEN = "test-admin-token"
MAX_UPDATE_BYTES = 256 * 1024**2

TransportFactory = Callable[[], Transport]


@asynccontextmanager
async def serving(
    federation: Federation, transport: str, max_update_bytes: int = MAX_UPDATE_BYTES
) -> AsyncIterator[TransportFactory]:
    """Yield a factory of client transports of kind ``transport`` reaching ``federation``."""
    if transport == InProcTransport.name:
        yield lambda: InProcTransport(federation)
        await federation.close()
        return
    settings = GatewaySettings(
        grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN, max_update_bytes=max_update_bytes
    )
    opened: list[Transport] = []
    async with Gateway(federation, settings) as gateway:
        address = gateway.addresses[transport]

        def factory() -> Transport:
            opened.append(connect(transport, address))
            return opened[-1]

        try:
            yield factory
        finally:
            for client in opened:
                await client.close()
