"""The REST client reads its connections in large pieces: a model comes down byte for byte
through the large-read backend, over one kept-alive connection, and each read asks the
socket for at least `READ_BYTES`."""

from __future__ import annotations

import ssl
from typing import Any

import httpcore
import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest
from fedgate.core.transport import Session
from fedgate.errors import TransportError
from fedgate.transport.rest.client import RestTransport
from fedgate.transport.rest.reads import HTTPX_ERRORS, READ_BYTES, LargeReadStream, as_httpx_error
from tests.transport.conftest import serving


class Recorded(httpcore.AsyncNetworkStream):
    """A socket's stand-in: hands out its bytes, noting how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        self.data, self.asked = data, list[int]()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        self.asked.append(max_bytes)
        piece, self.data = self.data[:max_bytes], self.data[max_bytes:]
        return piece

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        return Recorded(self.data)

    def get_extra_info(self, info: str) -> Any:
        return f"info {info}"


async def test_every_read_asks_for_at_least_the_large_size() -> None:
    inner = Recorded(bytes(3 * READ_BYTES))
    stream = LargeReadStream(inner, READ_BYTES)
    assert len(await stream.read(64 * 1024)) == READ_BYTES  # httpcore asks for 64 KiB
    assert len(await stream.read(2 * READ_BYTES)) == 2 * READ_BYTES  # more is kept
    assert inner.asked == [READ_BYTES, 2 * READ_BYTES]
    tls = await stream.start_tls(ssl.create_default_context())
    assert isinstance(tls, LargeReadStream)  # reads stay large after a TLS upgrade
    assert stream.get_extra_info("server_addr") == "info server_addr"


async def test_a_model_comes_down_whole_through_the_large_reads() -> None:
    weights = {"w": torch.randn(3 * READ_BYTES // 4), "b": torch.zeros(7)}  # ~3 MiB
    federation = Federation(weights, RunConfig(rounds=1, min_clients=1))
    async with serving(federation, "rest") as make_transport:
        client = make_transport()
        assert isinstance(client, RestTransport)
        session = Session.from_ack(await client.join(JoinRequest("a", "raw", 10)))
        for _ in range(2):
            model = await client.fetch_model(session, 0, "raw")
            received = get_codec("raw").decode(model.payload)
            assert all(torch.equal(received[k], weights[k]) for k in weights)
        assert client.backend.connections == 1  # every call on one kept-alive connection


def test_httpcore_errors_are_raised_as_httpx_names_them() -> None:
    """The client sends to httpcore's pool: its errors become httpx's (as httpx's own
    transport maps them), each to the class of its own name, the subclasses before their
    bases."""
    for kind, httpx_kind in HTTPX_ERRORS.items():
        assert kind.__name__ == httpx_kind.__name__
        mapped = as_httpx_error(kind("boom"))
        assert type(mapped) is httpx_kind and str(mapped) == "boom"
    assert as_httpx_error(ValueError("not httpcore's")) is None


async def test_a_refused_connection_is_a_transport_error_naming_it() -> None:
    client = RestTransport("http://127.0.0.1:9")  # the discard port: nothing listens
    try:
        with pytest.raises(TransportError) as caught:
            await client.join(JoinRequest("a", "raw", 10))
        assert caught.value.message.startswith("HTTP request failed: ConnectError:")
    finally:
        await client.close()
