"""Stopping a gateway with status watchers connected, on both transports.

The watch streams last until the run ends, so a server usually stops under open ones.
It must end them in good order: no traceback in any log (fedgate's and grpc's records,
uvicorn's lines on stderr), and for REST a stream whose body ends properly.
`end_status_streams` ends them at once; without it, they end when the server cancels
them at the end of its grace period, still without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.watch import end_status_streams
from tests.conftest import tiny_model
from tests.transport.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ENDED = "ended"  # what a watcher reports when its stream came to its normal end


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG. uvicorn's loggers do not reach it (uvicorn configures them, with
    their own handler on stderr, each time a server starts): tests read stderr for those."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


async def watch_rest(gateway: Gateway, first: asyncio.Event) -> str:
    timeout = httpx.Timeout(10.0, read=None)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout) as http,
            http.stream("GET", f"{gateway.http_url}/api/v1/status/watch", headers=ADMIN) as reply,
        ):
            async for line in reply.aiter_lines():
                if line.startswith("data: "):
                    first.set()
    except httpx.HTTPError as error:  # e.g. a chunked body cut short
        return f"{type(error).__name__}: {error}"
    return ENDED


async def watch_grpc(gateway: Gateway, first: asyncio.Event) -> str:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        stub = pb_grpc.OperatorStub(channel)
        metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        try:
            async for _ in stub.WatchStatus(pb.StatusRequest(), metadata=metadata):
                first.set()
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name}: {error.details()}"
    return ENDED


WATCHERS = {"rest": watch_rest, "grpc": watch_grpc}


async def stop_under_a_watcher(transport: str, *, end_streams_first: bool) -> tuple[str, float]:
    """Start a gateway on a running federation, watch its status, stop the gateway;
    returns how the watch ended and how long the stop took."""
    federation = Federation(tiny_model(), RunConfig(rounds=2, min_clients=1))
    gateway = Gateway(
        federation, GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN)
    )
    await gateway.start()
    federation.start()  # no clients: the run stays active, and so does the stream
    first = asyncio.Event()
    watcher = asyncio.create_task(WATCHERS[transport](gateway, first))
    await asyncio.wait_for(first.wait(), 10)
    started = time.monotonic()
    if end_streams_first:
        end_status_streams(federation)
    await gateway.stop(grace_s=2.0)
    took = time.monotonic() - started
    return await asyncio.wait_for(watcher, 10), took


def stderr_without_traceback(
    logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> str:
    """What went to stderr (uvicorn's log among it), checked to hold no traceback, as
    fedgate's and grpc's log records must not."""
    assert [r.getMessage() for r in logs.records if r.exc_info] == []
    err = capfd.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_a_watcher_cut_off_by_the_stop_leaves_no_traceback(
    transport: str, every_log: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # the gateway ends the streams itself before its servers stop: no watcher is cut off
    ended, _ = await stop_under_a_watcher(transport, end_streams_first=False)
    stderr_without_traceback(every_log, capfd)
    assert ended == ENDED  # the stream was closed properly, not cut


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_ending_the_streams_first_stops_the_gateway_at_once_and_quietly(
    transport: str, every_log: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    ended, took = await stop_under_a_watcher(transport, end_streams_first=True)
    assert ended == ENDED
    assert took < 1.5  # not the 2 s grace period a cancelled stream waits out
    err = stderr_without_traceback(every_log, capfd)
    assert [r.getMessage() for r in every_log.records if r.levelno >= logging.ERROR] == []
    assert "ERROR" not in err  # nor uvicorn's "Cancel 1 running task(s)"
