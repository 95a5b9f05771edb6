"""The REST client's HTTP (`http_session`): a model comes down whole over one kept-alive
connection; a task's long header is read; every way of getting no answer (nothing
listening, a server that says nothing, one that hangs up mid-body) is a TransportError
that says which, while the session goes on to the next request; and an answer the client
cannot read is the server's fault (a ServerError), never a pydantic or JSON error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest
from fedgate.core.transport import Session
from fedgate.errors import ServerError, TransportError
from fedgate.transport.filling import FILL_ON_LOOP_BYTES
from fedgate.transport.rest.client import RestTransport
from fedgate.transport.rest.http_session import MAX_FIELD_BYTES, Answer, HttpSession
from tests.transport.conftest import serving

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(reply: Reply) -> AsyncIterator[str]:
    """A hand-written HTTP server on loopback: ``reply`` answers each connection's first
    request as it likes (after its head is read); its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reply(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def get_once(reply: Reply) -> Answer:
    """One GET, on a session of its own, to a hand-written server answering with ``reply``."""
    async with raw_server(reply) as url:
        http = HttpSession(None)
        try:
            return await http.request("GET", url + "/", {}, 5.0)
        finally:
            await http.close()


def response_head(body_length: int, **headers: str) -> bytes:
    lines = [b"HTTP/1.1 200 OK", f"Content-Length: {body_length}".encode()]
    lines += [f"{name.replace('_', '-')}: {value}".encode() for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_a_model_comes_down_whole_over_one_kept_alive_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[Any] = []
    create = aiohttp.TCPConnector._create_connection

    async def counted(self: aiohttp.TCPConnector, *args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", counted)
    weights = {"w": torch.randn(3 << 18), "b": torch.zeros(7)}  # 3 MiB
    federation = Federation(weights, RunConfig(rounds=1, min_clients=1))
    async with serving(federation, "rest") as make_transport:
        client = make_transport()
        assert isinstance(client, RestTransport)
        session = Session.from_ack(await client.join(JoinRequest("a", "raw", 10)))
        for _ in range(3):
            model = await client.fetch_model(session, 0, "raw")
            assert type(model.payload) is bytearray  # filled as it came, handed over
            received = get_codec("raw").decode(model.payload)
            assert all(torch.equal(received[k], weights[k]) for k in weights)
    assert len(opened) == 1  # the join and three downloads on one connection


async def test_a_header_longer_than_aiohttps_default_is_read() -> None:
    long_value = "t" * (MAX_FIELD_BYTES - 1024)  # a task's JSON travels in a header

    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response_head(2, X_Task=long_value) + b"ok")
        await writer.drain()

    answer = await get_once(reply)
    assert answer.headers["x-task"] == long_value and answer.content == b"ok"


async def test_nothing_listening_is_a_transport_error_naming_the_address() -> None:
    client = RestTransport("http://127.0.0.1:9")  # the discard port: nothing listens
    try:
        with pytest.raises(TransportError) as caught:
            await client.join(JoinRequest("a", "raw", 10))
    finally:
        await client.close()
    message = caught.value.message
    assert message.startswith("HTTP request failed: ClientConnectorError:"), message
    assert "127.0.0.1:9" in message


async def test_a_server_that_says_nothing_is_a_timeout_not_a_hang() -> None:
    async def reply(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    async with raw_server(reply) as url:
        http = HttpSession(None)
        try:
            with pytest.raises(TransportError, match=r"no answer within 0\.3 s"):
                await http.request("GET", url + "/", {}, 0.3)
        finally:
            await http.close()


@pytest.mark.parametrize("declared", [1000, 4 * FILL_ON_LOOP_BYTES])  # read whole; filled
async def test_a_body_cut_short_is_a_transport_error_and_the_next_request_goes_through(
    declared: int,
) -> None:
    calls = 0

    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.write(response_head(declared) + b"x" * (declared // 2))  # then hang up
        else:
            writer.write(response_head(2) + b"ok")
        await writer.drain()

    async with raw_server(reply) as url:
        http = HttpSession(None, dropped_hint="the hint")
        try:
            with pytest.raises(TransportError, match=r"ClientPayloadError.*the hint"):
                await http.request("GET", url + "/", {}, 5.0)
            assert (await http.request("GET", url + "/", {}, 5.0)).content == b"ok"
        finally:
            await http.close()


async def test_a_large_body_is_filled_into_one_buffer_byte_for_byte() -> None:
    body = bytes(range(256)) * (3 * FILL_ON_LOOP_BYTES // 256) + b"end"

    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response_head(len(body)))
        for start in range(0, len(body), 100_000):  # in pieces, as a socket delivers them
            writer.write(body[start : start + 100_000])
            await writer.drain()

    answer = await get_once(reply)
    assert type(answer.content) is bytearray and answer.content == body


async def test_an_answer_declaring_more_than_memory_holds_is_a_transport_error() -> None:
    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response_head(1 << 62))
        await writer.drain()

    with pytest.raises(TransportError, match="no memory for a"):
        await get_once(reply)


@pytest.mark.parametrize("body", [b'{"unexpected": true}', b"not json", b""])
async def test_an_answer_the_client_cannot_read_is_a_server_error(body: bytes) -> None:
    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = response_head(len(body), Content_Type="application/json")
        writer.write(head + body)
        await writer.drain()

    async with raw_server(reply) as url:
        client = RestTransport(url)
        try:
            with pytest.raises(ServerError, match="unexpected reply"):
                await client.join(JoinRequest("a", "raw", 10))
        finally:
            await client.close()
