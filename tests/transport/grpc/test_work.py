"""The Work call: a client's asks and updates on one long-lived call.

Counted on the server (an interceptor notes each call by method): a whole run takes one
Work call per session and no single calls; a server without Work (an older fedgate)
gets the single calls, with the same outcome. Hand-written calls: who may open one, what
a malformed one gets, that a second call of a client takes over from the first, and that
a refused step ends the call while fedgate's client goes on with a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from fedgate.codecs import get_codec
from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest, ModelWant, TaskKind, Update
from fedgate.core.ports import weights_hash
from fedgate.core.transport import Session
from fedgate.errors import RoundClosed, TransportError, UnknownClient
from fedgate.transport.grpc import streams
from fedgate.transport.grpc import work as work_module
from fedgate.transport.grpc.call_status import ServerStatus
from fedgate.transport.grpc.channel import CHANNEL_OPTIONS, CHUNK_BYTES
from fedgate.transport.grpc.client import GrpcTransport, method_path
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.status import ERROR_CODE_KEY
from fedgate.transport.servers import SERVER_ADAPTERS, Extensions, ServerAdapter, ServerSettings
from tests.conftest import tiny_model
from tests.transport.test_task_with_model import StepTrainer

ROUNDS = 3


class CountCalls(grpc.aio.ServerInterceptor):
    """Counts the calls by method; hides those in ``hidden`` (grpc: UNIMPLEMENTED)."""

    def __init__(self, hidden: tuple[str, ...] = ()) -> None:
        self.calls: Counter[str] = Counter()
        self.hidden = hidden

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        name = details.method.rsplit("/", 1)[-1]
        self.calls[name] += 1
        return None if name in self.hidden else await continuation(details)


@asynccontextmanager
async def served(
    interceptor: grpc.aio.ServerInterceptor, rounds: int = ROUNDS
) -> AsyncIterator[tuple[Federation, str, ServerAdapter]]:
    """A gRPC server with ``interceptor`` on one federation: it, its address and adapter
    (a test may stop the adapter itself; stopping it again is nothing)."""
    config = RunConfig(rounds=rounds, min_clients=1, round_deadline_s=10.0, seed=0)
    federation = Federation(tiny_model(), config)
    adapter = SERVER_ADAPTERS["grpc"]()
    extensions = Extensions(grpc_interceptors=(interceptor,))
    address = await adapter.start(
        federation, ServerSettings(admin_token="t", extensions=extensions)
    )
    try:
        yield federation, address, adapter
    finally:
        await adapter.stop(1.0)
        await federation.close()


async def run_one_client(hidden: tuple[str, ...] = ()) -> tuple[str, Counter[str]]:
    """A whole run of one fedgate client: the final model's hash and the calls made."""
    counter = CountCalls(hidden)
    async with served(counter) as (federation, address, _):
        run = federation.start()
        transport = GrpcTransport(address)
        member = FederatedClient(transport, StepTrainer(), "a", "raw", poll_s=5.0)
        try:
            report = await asyncio.wait_for(member.run(), 60)
        finally:
            await transport.close()
        await run
        assert report.rounds == list(range(1, ROUNDS + 1)) and report.dropped == []
        return weights_hash(federation.models.current), counter.calls


async def test_a_run_takes_one_work_call_and_no_single_calls() -> None:
    _, calls = await run_one_client()
    assert calls["Work"] == 1
    assert calls["NextTaskWithModel"] == calls["NextTask"] == calls["SubmitUpdate"] == 0
    assert calls["FetchModel"] == 0


async def test_without_work_the_client_makes_the_single_calls_to_the_same_end() -> None:
    on_work, _ = await run_one_client()
    single, calls = await run_one_client(hidden=("Work",))
    assert single == on_work
    assert calls["Work"] == 1  # asked once
    assert calls["NextTaskWithModel"] >= ROUNDS and calls["SubmitUpdate"] == ROUNDS


async def test_a_worn_work_call_is_renewed_between_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renewed before every step (as it is after ten minutes): each old call is ended
    between two steps, nothing is lost, the run ends as it does on one call."""
    on_one_call, _ = await run_one_client()
    monkeypatch.setattr(work_module, "RENEW_AFTER_S", 0.0)
    renewed, calls = await run_one_client()
    assert renewed == on_one_call
    assert calls["Work"] >= 2 * ROUNDS + 1  # an ask and an update a round, the last ask
    assert calls["NextTaskWithModel"] == calls["SubmitUpdate"] == 0


# ---- hand-written calls ---------------------------------------------------------------


@asynccontextmanager
async def raw_work() -> AsyncIterator[tuple[Federation, Any, tuple[tuple[str, str], ...]]]:
    """A started run, a client joined over a raw channel: the federation, a factory of
    raw Work calls (bytes in, parsed `WorkDown`s out) and the client's metadata."""
    async with (
        served(CountCalls(), rounds=50) as (federation, address, _),
        grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel,
    ):
        federation.start()
        yield federation, raw_work_calls(channel), await joined(address)


async def joined(address: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a client that joined."""
    joining = GrpcTransport(address)
    ack = await joining.join(JoinRequest("w", "raw", 10))
    await joining.close()
    return (("fedgate-client-id", ack.client_id), ("authorization", f"Bearer {ack.token}"))


def raw_work_calls(channel: grpc.aio.Channel) -> Any:
    """A factory of raw Work calls: messages in, parsed `WorkDown`s out."""
    return channel.stream_stream(
        method_path("Work"),
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=pb.WorkDown.FromString,
    )


def error_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    codes = [v for k, v in error.trailing_metadata() or () if k == ERROR_CODE_KEY]
    return error.code(), str(codes[0]) if codes else ""


async def ended_with(call: Any, status: ServerStatus | None = None) -> tuple[grpc.StatusCode, str]:
    """The status ``call`` ended with (the server's, as ``status`` noted it, if given)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            assert await call.read() is not grpc.aio.EOF, "the call ended without an error"
    error = caught.value if status is None else status.server_error(caught.value)
    assert error.details()
    return error_of(error)


ASK = pb.WorkUp(ask=pb.NextTaskWithModelRequest(wait_s=5, codec="raw"))


async def test_no_credentials_no_work_call() -> None:
    async with raw_work() as (_, work, meta):
        for metadata in [(), (meta[0], ("authorization", "Bearer forged"))]:
            call = work(metadata=metadata)
            status = ServerStatus(call)  # refused before it is read: the write may fail
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.write(ASK)
            ended = await ended_with(call, status)
            assert ended == (grpc.StatusCode.UNAUTHENTICATED, "unauthorized")


@pytest.mark.parametrize(
    "first",
    [
        pb.WorkUp(update=pb.UpdateChunk(data=b"\x00" * 100)),  # data before any header
        pb.WorkUp(),  # neither an ask nor an update
    ],
    ids=["data-first", "empty"],
)
async def test_a_malformed_step_ends_the_call(first: pb.WorkUp) -> None:
    async with raw_work() as (federation, work, meta):
        call = work(metadata=meta)
        await call.write(first)
        assert await ended_with(call) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_update")
        assert federation.models.version == 0


async def test_an_update_cut_off_by_an_ask_is_refused() -> None:
    async with raw_work() as (federation, work, meta):
        call = work(metadata=meta)
        await call.write(ASK)
        task = (await call.read()).task
        for _ in range(2):  # the model's header and bytes (a tiny model: one chunk)
            assert (await call.read()).HasField("model")
        header = pb.UpdateHeader(round_id=task.round_id, codec="raw", num_examples=10)
        header.total_size = 1000
        await call.write(pb.WorkUp(update=pb.UpdateChunk(header=header)))
        await call.write(ASK)
        assert await ended_with(call) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_update")
        assert federation.models.version == 0


async def test_a_second_work_call_takes_over_from_the_first() -> None:
    async with raw_work() as (_, work, meta):
        first = work(metadata=meta)
        await first.write(ASK)
        assert (await first.read()).model_follows
        for _ in range(2):  # the model's header and bytes (a tiny model: one chunk)
            assert (await first.read()).HasField("model")
        second = work(metadata=meta)
        await second.write(pb.WorkUp(ask=pb.NextTaskWithModelRequest(wait_s=0.1)))
        assert (await second.read()).HasField("task")
        assert await ended_with(first) == (grpc.StatusCode.FAILED_PRECONDITION, "conflict")


async def test_a_refused_step_ends_the_call_and_the_client_goes_on_with_another() -> None:
    counter = CountCalls()
    async with served(counter, rounds=50) as (federation, address, _):
        federation.start()
        transport = GrpcTransport(address)
        try:
            ack = await transport.join(JoinRequest("w", "raw", 10))
            session = Session(ack.client_id, ack.token)
            want = ModelWant("raw", "")
            task = await transport.next_task_with_model(session, 5, want)
            assert task.kind is TaskKind.TRAIN and task.model is not None
            stale = Update("no-such-round", 0, 10, "raw", get_codec("raw").encode(tiny_model()))
            with pytest.raises(RoundClosed):
                await transport.submit_update(session, stale)
            again = await transport.next_task_with_model(session, 0.2, want)
            assert again.kind in (TaskKind.TRAIN, TaskKind.WAIT)
            assert counter.calls["Work"] == 2
            federation.kick(ack.client_id, "test")
            with pytest.raises(UnknownClient):  # as the single call says it
                await transport.next_task_with_model(session, 0.2, want)
        finally:
            await transport.close()


@pytest.mark.parametrize("hidden", [(), ("Work",)], ids=["work", "single-calls"])
async def test_an_update_refused_at_its_header_says_why_though_its_body_was_on_the_way(
    hidden: tuple[str, ...],
) -> None:
    """The server refuses an update at its header and ends the call while the client is
    still writing the body's chunks: the write fails, and grpc reports the call INTERNAL
    ("Internal error from Core") in place of the server's status (`call_status`). Every
    refusal is the server's (RoundClosed), on the Work call and on SubmitUpdate (a server
    without Work; its first refusal also tells the client so: UNIMPLEMENTED, not a cut)."""
    async with served(CountCalls(hidden), rounds=50) as (federation, address, _):
        federation.start()
        transport = GrpcTransport(address)
        try:
            session = Session.from_ack(await transport.join(JoinRequest("w", "raw", 10)))
            body = bytes(6 * CHUNK_BYTES)  # seven messages: the header, six chunks
            stale = Update("no-such-round", 0, 10, "raw", body)
            for _ in range(20):
                with pytest.raises(RoundClosed):
                    await transport.submit_update(session, stale)
        finally:
            await transport.close()


async def test_a_call_taken_over_in_a_step_answers_it_then_ends() -> None:
    """The first call is in a step (its update's body on the way) when the second opens:
    that step is answered, and the call then ends (conflict) without waiting for another."""
    async with raw_work() as (_, work, meta):
        first = work(metadata=meta)
        await first.write(ASK)
        task = (await first.read()).task
        for _ in range(2):  # the model's header and bytes
            await first.read()
        body = get_codec("raw").encode(tiny_model(1.0))
        header = pb.UpdateHeader(round_id=task.round_id, codec="raw", num_examples=10)
        header.total_size = len(body)
        await first.write(pb.WorkUp(update=pb.UpdateChunk(header=header)))
        await asyncio.sleep(0.1)  # the server reads the body now
        second = work(metadata=meta)
        await second.write(pb.WorkUp(ask=pb.NextTaskWithModelRequest(wait_s=0.1)))
        assert (await second.read()).HasField("task")
        await first.write(pb.WorkUp(update=pb.UpdateChunk(data=body)))
        assert (await first.read()).receipt.accepted == 1  # its step, answered
        assert await ended_with(first) == (grpc.StatusCode.FAILED_PRECONDITION, "conflict")


def test_the_work_messages_take_the_short_way_and_parse_the_same() -> None:
    data = memoryview(bytes(range(256)) * 3)
    up = streams.work_up_to_wire(data)
    assert pb.WorkUp.FromString(up).update.data == bytes(data)
    assert bytes(streams.work_up_from_wire(up)) == bytes(data)  # type: ignore[arg-type]
    down = streams.work_down_to_wire(data)
    assert pb.WorkDown.FromString(down).model.data == bytes(data)
    assert bytes(streams.work_down_from_wire(down)) == bytes(data)  # type: ignore[arg-type]
    task = pb.WorkDown(task=pb.Task(round_id="r"), model_follows=True)
    assert streams.work_down_from_wire(task.SerializeToString()) == task


@pytest.mark.parametrize("settle_s", [0.0, 0.2], ids=["at-once", "settled"])
async def test_a_work_call_its_server_ended_is_a_lost_connection(settle_s: float) -> None:
    """The server stops under an open Work call (as on a restart): the next step says the
    server cannot be reached (a TransportError, which the client waits out), not that it
    failed, whether the call's end has reached the client yet or not."""
    async with served(CountCalls()) as (federation, address, adapter):
        federation.start()
        transport = GrpcTransport(address)
        try:
            ack = await transport.join(JoinRequest("w", "raw", 10))
            session = Session(ack.client_id, ack.token)
            task = await transport.next_task_with_model(session, 5, ModelWant("raw", ""))
            await adapter.stop(0.0)
            await asyncio.sleep(settle_s)
            update = Update(task.round_id, 0, 10, "raw", get_codec("raw").encode(tiny_model()))
            with pytest.raises(TransportError) as caught:
                await transport.submit_update(session, update)
            assert type(caught.value) is TransportError, caught.value
        finally:
            await transport.close()


class ResetWork(grpc.aio.ServerInterceptor):
    """Work calls end as a reset connection ends them: INTERNAL, no fedgate code."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if not details.method.endswith("/Work"):
            return await continuation(details)

        async def reset(requests: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.INTERNAL, "Internal error from Core")

        return grpc.stream_stream_rpc_method_handler(reset)


async def test_a_work_call_reset_without_a_fedgate_code_is_a_lost_connection() -> None:
    async with served(ResetWork()) as (_, address, _):
        transport = GrpcTransport(address)
        try:
            ack = await transport.join(JoinRequest("w", "raw", 10))
            session = Session(ack.client_id, ack.token)
            with pytest.raises(TransportError) as caught:
                await transport.next_task_with_model(session, 1, ModelWant())
            assert type(caught.value) is TransportError and "cut off" in caught.value.message
        finally:
            await transport.close()


async def test_a_stopping_server_ends_waiting_work_calls_without_its_grace() -> None:
    """A client between two steps holds nothing the server must wait for: a stop with a
    long grace period returns at once, and the client's call ends as unavailable."""
    async with (
        served(CountCalls()) as (federation, address, adapter),
        grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel,
    ):
        federation.start()
        call = raw_work_calls(channel)(metadata=await joined(address))
        await call.write(ASK)
        for _ in range(3):  # the task, its model's header and bytes: now it trains
            await call.read()
        started = time.monotonic()
        await adapter.stop(10.0)
        assert time.monotonic() - started < 2.0
        assert await ended_with(call) == (grpc.StatusCode.UNAVAILABLE, "transport_error")
