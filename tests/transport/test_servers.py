"""The server adapter seam: the registry, each adapter on its own, and the gateway serving
whatever the registry holds (a third transport included) on loopback, port 0."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest
from fedgate.core.service import FederationService
from fedgate.errors import ConfigError, TransportError
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.run.launch import served_addresses
from fedgate.transport.connect import TRANSPORTS, connect
from fedgate.transport.rest.server import RestServerAdapter
from fedgate.transport.servers import (
    SERVER_ADAPTERS,
    ServerSettings,
    get_server_adapter,
    host_port,
    port_of,
)
from tests.conftest import tiny_model
from tests.transport.conftest import ADMIN_TOKEN

CONNECTABLE = [name for name in SERVER_ADAPTERS if name in TRANSPORTS]
GRACE_S = 0.25


class LineAdapter:
    """A third transport in a few lines: each connection gets the run id and state."""

    name = "line"

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.stopped_with: list[float] = []

    async def start(self, service: FederationService, settings: ServerSettings) -> str:
        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(f"{service.run_id} {service.state.value}\n".encode())
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(answer, settings.host, settings.port)
        return host_port(settings.host, self.server.sockets[0].getsockname()[1])

    async def stop(self, grace_s: float) -> None:
        self.stopped_with.append(grace_s)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


class BrokenAdapter:
    name = "broken"

    async def start(self, service: FederationService, settings: ServerSettings) -> str:
        raise OSError("cannot bind the broken transport")

    async def stop(self, grace_s: float) -> None:
        return None


@pytest.fixture
def line_adapters(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LineAdapter]]:
    """Registers the line transport; yields the adapters the registry made."""
    made: list[LineAdapter] = []

    def factory() -> LineAdapter:
        made.append(LineAdapter())
        return made[-1]

    monkeypatch.setitem(SERVER_ADAPTERS, LineAdapter.name, factory)
    yield made


def settings() -> GatewaySettings:
    return GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN)


def federation() -> Federation:
    return Federation(tiny_model(), RunConfig(rounds=1, min_clients=1, round_deadline_s=10.0))


async def refused(address: str) -> bool:
    host, port = address.rpartition("//")[2].rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def read_line(address: str) -> str:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    line = await reader.readline()
    writer.close()
    return line.decode().strip()


def test_an_unknown_server_transport_is_a_config_error_naming_the_registered() -> None:
    with pytest.raises(ConfigError) as caught:
        get_server_adapter("carrier-pigeon")
    assert "'carrier-pigeon'" in caught.value.message
    assert f"available: {', '.join(SERVER_ADAPTERS)}" in caught.value.message


@pytest.mark.parametrize("transport", CONNECTABLE)
async def test_each_adapter_serves_a_federation_on_its_own(transport: str) -> None:
    served = federation()
    adapter = get_server_adapter(transport)
    assert adapter.name == transport
    await adapter.stop(GRACE_S)  # never started: nothing to do
    address = await adapter.start(served, ServerSettings(admin_token=ADMIN_TOKEN))
    assert port_of(address) > 0
    client = connect(transport, address)
    try:
        ack = await client.join(JoinRequest(name="probe", codec="raw", num_examples=5))
        assert served.clients.get(ack.client_id).transport == transport
    finally:
        await client.close()
    await adapter.stop(GRACE_S)
    await adapter.stop(GRACE_S)  # stopped already: nothing to do
    assert await refused(address)
    await served.close()


async def test_the_gateway_serves_every_registered_transport_and_stops_them(
    line_adapters: list[LineAdapter],
) -> None:
    served = federation()
    gateway = Gateway(served, settings())
    async with gateway:
        assert list(gateway.addresses) == list(SERVER_ADAPTERS)
        assert await read_line(gateway.addresses["line"]) == f"{served.run_id} {served.state.value}"
        # what callers written before the registry read
        assert gateway.grpc_target == gateway.addresses["grpc"]
        assert gateway.http_url == gateway.addresses["rest"]
        assert gateway.grpc_port == port_of(gateway.grpc_target) > 0
        assert gateway.http_port == port_of(gateway.http_url) > 0
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            assert (await http.get("/healthz")).json()["run_id"] == served.run_id
    [adapter] = line_adapters
    assert adapter.stopped_with == [2.0]  # the gateway's default grace period
    for address in gateway.addresses.values():
        assert await refused(address)


async def test_a_second_rest_adapter_serves_the_same_federation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(SERVER_ADAPTERS, "rest-2", RestServerAdapter)
    served = federation()
    async with Gateway(served, settings()) as gateway:
        first, second = gateway.addresses["rest"], gateway.addresses["rest-2"]
        assert first != second
        for url in (first, second):
            async with httpx.AsyncClient(base_url=url) as http:
                assert (await http.get("/healthz")).json()["run_id"] == served.run_id


async def test_when_an_adapter_cannot_start_those_started_are_stopped(
    monkeypatch: pytest.MonkeyPatch, line_adapters: list[LineAdapter]
) -> None:
    monkeypatch.setitem(SERVER_ADAPTERS, BrokenAdapter.name, BrokenAdapter)
    served = federation()
    gateway = Gateway(served, settings())
    with pytest.raises(OSError, match="broken transport"):
        await gateway.start()
    assert gateway.addresses == {} and gateway.grpc_port == gateway.http_port == 0
    [adapter] = line_adapters
    assert adapter.stopped_with == [0.0] and adapter.server is None
    await served.close()


def test_ports_by_transport_with_the_fields_named_before_the_registry() -> None:
    plain = GatewaySettings(grpc_port=1, http_port=2)
    assert [plain.port_for(name) for name in ("grpc", "rest", "line")] == [1, 2, 0]
    chosen = GatewaySettings(grpc_port=1, http_port=2, ports={"rest": 3, "line": 4})
    assert [chosen.port_for(name) for name in ("grpc", "rest", "line")] == [1, 3, 4]
    server = chosen.server_settings("line", None)
    assert (server.port, server.host, server.admin_token) == (4, "127.0.0.1", chosen.admin_token)


def test_the_launcher_reads_addresses_from_the_ready_file() -> None:
    ready = {"grpc_port": 5, "http_port": 6, "admin_token": "t", "run_id": "r"}
    with pytest.raises(TransportError, match="names no addresses"):
        served_addresses(ready)
    addresses = {"grpc": "127.0.0.1:5", "rest": "http://127.0.0.1:6", "line": "127.0.0.1:7"}
    assert served_addresses({**ready, "addresses": addresses}) == addresses


def test_addresses_put_ipv6_hosts_in_brackets_and_give_their_port_back() -> None:
    assert host_port("127.0.0.1", 50051) == "127.0.0.1:50051"
    assert host_port("::1", 50051) == "[::1]:50051"
    assert host_port("example.org", 1) == "example.org:1"
    for address in ("127.0.0.1:50051", "[::1]:50051", "https://[::1]:50051"):
        assert port_of(address) == 50051
