"""Connection limits on both transports, probed with raw sockets on loopback.

A peer that sends nothing, sends its request head (or the HTTP/2 preface) a byte at a
time, idles on a kept-alive connection, sends oversized headers or metadata, or piles up
calls is cut off by the gateway's `ConnectionLimits`, while a normal client is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc
import httpx
import pytest

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest
from fedgate.errors import ConfigError, Overloaded
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.connection_limits import ConnectionLimits, grpc_server_options
from fedgate.transport.grpc.channel import CHANNEL_OPTIONS
from fedgate.transport.grpc.client import GrpcTransport
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from tests.conftest import tiny_model

HEAD_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1
HANDSHAKE_TIMEOUT_S = 1.0
SLACK_S = 1.0  # timers, scheduling on a busy 2-core machine
LIMITS = ConnectionLimits(
    http_head_timeout_s=HEAD_TIMEOUT_S,
    http_keep_alive_s=KEEP_ALIVE_S,
    http_max_head_bytes=4096,
    http_max_concurrency=8,
    grpc_handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
    grpc_max_concurrent_rpcs=2,
    grpc_max_metadata_bytes=4096,
)
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: fedgate\r\n\r\n"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@asynccontextmanager
async def serving(limits: ConnectionLimits) -> AsyncIterator[Gateway]:
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=1))
    settings = GatewaySettings(grpc_port=0, http_port=0, limits=limits)
    async with Gateway(federation, settings) as running:
        yield running


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with serving(LIMITS) as running:
        yield running


async def seconds_until_closed(
    port: int,
    send: bytes = b"",
    byte_every_s: float = 0.0,
    within_s: float = 10.0,
    first_request: bool = False,
) -> float:
    """Open a connection (``first_request``: make one request on it and read the reply),
    send ``send`` (a byte at a time if ``byte_every_s``), read until the server closes
    the connection: how long that took from after the first reply (``within_s``: never)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first_request:
        writer.write(REQUEST)
        await reader.readuntil(b"}")  # the end of /healthz's JSON body
    start = time.monotonic()

    async def trickle() -> None:
        step = 1 if byte_every_s else max(1, len(send))
        with contextlib.suppress(ConnectionError):
            for i in range(0, len(send), step):
                writer.write(send[i : i + step])
                await writer.drain()
                await asyncio.sleep(byte_every_s)

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return within_s
    except ConnectionError:
        pass
    finally:
        sender.cancel()
        writer.close()
    return time.monotonic() - start


async def healthz(gateway: Gateway) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{gateway.http_url}/healthz")).status_code


async def test_a_request_head_sent_a_byte_a_second_is_cut_off_while_others_are_served(
    gateway: Gateway,
) -> None:
    slow_head = b"GET /healthz HTTP/1.1\r\nHost: fedgate\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    slow = [
        asyncio.create_task(seconds_until_closed(gateway.http_port, slow_head, 1.0))
        for _ in range(4)
    ]
    await asyncio.sleep(0.5)
    assert await healthz(gateway) == 200  # served while the slow heads trickle in
    for elapsed in await asyncio.gather(*slow):
        assert HEAD_TIMEOUT_S - 0.2 <= elapsed <= HEAD_TIMEOUT_S + SLACK_S


async def test_a_connection_that_sends_nothing_is_closed(gateway: Gateway) -> None:
    elapsed = await seconds_until_closed(gateway.http_port)
    assert HEAD_TIMEOUT_S - 0.2 <= elapsed <= HEAD_TIMEOUT_S + SLACK_S


async def test_an_idle_keep_alive_connection_is_closed(gateway: Gateway) -> None:
    elapsed = await seconds_until_closed(gateway.http_port, first_request=True)
    assert KEEP_ALIVE_S - 0.2 <= elapsed <= KEEP_ALIVE_S + SLACK_S


async def test_a_slow_next_request_on_a_kept_alive_connection_is_cut_off(
    gateway: Gateway,
) -> None:
    """Its first byte cancels uvicorn's keep-alive timer: the head deadline takes over."""
    elapsed = await seconds_until_closed(gateway.http_port, REQUEST, 0.5, first_request=True)
    assert HEAD_TIMEOUT_S - 0.2 <= elapsed <= HEAD_TIMEOUT_S + SLACK_S


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def send_oversized_head(port: int, header_bytes: int) -> bytes:
    """A request whose one header is ``header_bytes`` long, sent 64 KiB at a time (so this
    side holds no more than that): what the server answers (b"" if it just closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    piece = b"a" * min(header_bytes, 64 << 10)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: fedgate\r\nX-Big: ")
        for _ in range(header_bytes // len(piece)):
            writer.write(piece)
            await writer.drain()
        writer.write(b"\r\n\r\n")
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionError:
        return b""  # closed while we were still sending: refused too
    finally:
        writer.close()


async def test_oversized_headers_are_refused_without_the_server_growing(
    gateway: Gateway,
) -> None:
    assert (await send_oversized_head(gateway.http_port, 2000)).startswith(b"HTTP/1.1 200")
    before = rss_mb()
    for _ in range(20):
        reply = await send_oversized_head(gateway.http_port, 4 << 20)
        assert reply == b"" or reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), reply[:80]
    assert rss_mb() - before < 8  # 80 MB of header bytes were sent (measured: < 0.5 MB)
    assert await healthz(gateway) == 200


async def exchange(port: int, request: bytes) -> bytes:
    """``request`` sent whole on a new connection; all the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_a_head_over_the_limit_gets_431_and_a_body_never_counts_as_head(
    gateway: Gateway,
) -> None:
    """The head alone is measured: a head of 20 KiB (the limit: 4 KiB) is answered 431 and
    the connection closed; a small head whose 64 KiB body arrives in the same write is a
    request like any other (here a 404: no such route, but read and answered)."""
    big = b"GET /healthz HTTP/1.1\r\nHost: fedgate\r\nX-Big: " + b"a" * (20 << 10) + b"\r\n\r\n"
    assert (await exchange(gateway.http_port, big)).startswith(b"HTTP/1.1 431 ")
    body = b"x" * (64 << 10)
    post = (
        b"POST /no-such-route HTTP/1.1\r\nHost: fedgate\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert (await exchange(gateway.http_port, post)).startswith(b"HTTP/1.1 404 ")
    assert await healthz(gateway) == 200


async def test_beyond_the_concurrency_limit_requests_get_503(gateway: Gateway) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", gateway.http_port) for _ in range(8)]
    assert await healthz(gateway) == 503
    for _, writer in idle:
        writer.close()
    await asyncio.sleep(0.2)
    assert await healthz(gateway) == 200


async def test_grpc_cuts_off_silent_and_slow_handshakes(gateway: Gateway) -> None:
    port = gateway.grpc_port
    for elapsed in await asyncio.gather(
        seconds_until_closed(port),
        seconds_until_closed(port, HTTP2_PREFACE, 0.3),  # a byte every 0.3 s
        seconds_until_closed(port, HTTP2_PREFACE),  # the preface, but never its SETTINGS
    ):
        assert HANDSHAKE_TIMEOUT_S - 0.2 <= elapsed <= HANDSHAKE_TIMEOUT_S + SLACK_S


@pytest.fixture
async def stub(gateway: Gateway) -> AsyncIterator[tuple[Any, grpc.aio.Channel]]:
    async with grpc.aio.insecure_channel(gateway.grpc_target, options=CHANNEL_OPTIONS) as channel:
        yield pb_grpc.FederationStub(channel), channel


def join_request(name: str) -> pb.JoinRequest:
    return pb.JoinRequest(name=name, codec="raw", num_examples=10)


async def test_grpc_closes_an_idle_connection_and_the_client_reconnects() -> None:
    async with (
        serving(replace(LIMITS, grpc_idle_s=0.5)) as gateway,
        grpc.aio.insecure_channel(gateway.grpc_target, options=CHANNEL_OPTIONS) as channel,
    ):
        federation = pb_grpc.FederationStub(channel)
        await federation.Join(join_request("a"))
        state = channel.get_state()
        assert state is grpc.ChannelConnectivity.READY
        async with asyncio.timeout(5):  # the server's GOAWAY puts the channel back to IDLE
            while state is not grpc.ChannelConnectivity.IDLE:
                await channel.wait_for_state_change(state)
                state = channel.get_state()
        await federation.Join(join_request("b"))  # reconnects by itself


async def test_grpc_refuses_oversized_metadata(stub: tuple[Any, grpc.aio.Channel]) -> None:
    federation, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await federation.Join(join_request("a"), metadata=(("x-big", "a" * 20_000),))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await federation.Join(join_request("b"))


async def test_grpc_refuses_calls_beyond_the_concurrency_limit(
    gateway: Gateway, stub: tuple[Any, grpc.aio.Channel]
) -> None:
    federation, _ = stub
    ack = await federation.Join(join_request("a"))
    metadata = (("fedgate-client-id", ack.client_id), ("authorization", f"Bearer {ack.token}"))
    polls = [  # the run has not started: these wait their whole wait_s
        asyncio.ensure_future(
            federation.NextTask(pb.NextTaskRequest(wait_s=1.5), metadata=metadata)
        )
        for _ in range(2)
    ]
    await asyncio.sleep(0.3)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await federation.Join(join_request("b"))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    client = GrpcTransport(gateway.grpc_target)
    with pytest.raises(Overloaded):  # fedgate's client: retryable, not "payload too large"
        await client.join(JoinRequest(name="b", codec="raw", num_examples=10))
    await client.close()
    await asyncio.gather(*polls)
    await federation.Join(join_request("c"))


def test_limits_are_positive_and_reach_grpc_as_channel_arguments() -> None:
    with pytest.raises(ConfigError, match="http_head_timeout_s"):
        ConnectionLimits(http_head_timeout_s=0)
    options = dict(grpc_server_options(ConnectionLimits()))
    assert options["grpc.server_handshake_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 60_000
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.max_connection_age_grace_ms"] == 900_000
