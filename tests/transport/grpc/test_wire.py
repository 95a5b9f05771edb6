"""The gRPC adapter on the wire: status codes, error metadata, chunking, operator service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import RunState
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.grpc.channel import CHANNEL_OPTIONS, CHUNK_BYTES
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.grpc.status import ERROR_CODE_KEY
from tests.conftest import tiny_model
from tests.transport.conftest import ADMIN_TOKEN

LIMIT = 50_000
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@pytest.fixture
async def stubs() -> AsyncIterator[tuple[Any, Any, Federation]]:
    federation = Federation(tiny_model(), RunConfig(rounds=2, min_clients=1))
    settings = GatewaySettings(
        grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN, max_update_bytes=LIMIT
    )
    async with (
        Gateway(federation, settings) as gateway,
        grpc.aio.insecure_channel(gateway.grpc_target, options=CHANNEL_OPTIONS) as channel,
    ):
        yield pb_grpc.FederationStub(channel), pb_grpc.OperatorStub(channel), federation


def code_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    codes = [v for k, v in error.trailing_metadata() or () if k == ERROR_CODE_KEY]
    return error.code(), str(codes[0]) if codes else ""


async def expect(call: Any, status: grpc.StatusCode, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert code_of(caught.value) == (status, code)
    assert caught.value.details()


def chunks(header: pb.UpdateHeader, body: bytes, size: int = 1000) -> list[pb.UpdateChunk]:
    parts = [pb.UpdateChunk(data=body[i : i + size]) for i in range(0, len(body), size)]
    return [pb.UpdateChunk(header=header), *parts]


async def joined_with_a_task(
    client: Any, federation: Federation
) -> tuple[tuple[tuple[str, str], ...], pb.Task]:
    """The run started, a raw client joined over the stub: its metadata and first task."""
    federation.start()
    ack = await client.Join(pb.JoinRequest(name="w", codec="raw", num_examples=100))
    meta = (("fedgate-client-id", ack.client_id), ("authorization", f"Bearer {ack.token}"))
    task = await client.NextTask(pb.NextTaskRequest(wait_s=5), metadata=meta)
    return meta, task


async def test_each_bad_call_gets_its_status_code(stubs: tuple[Any, Any, Federation]) -> None:
    client, _, federation = stubs
    meta, task = await joined_with_a_task(client, federation)
    good = get_codec("raw").encode(tiny_model(1.0))

    def header(**changes: Any) -> pb.UpdateHeader:
        fields = {
            "round_id": task.round_id,
            "model_version": 0,
            "num_examples": 10,
            "codec": "raw",
            "total_size": len(good),
            **changes,
        }
        return pb.UpdateHeader(**fields)

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect(
        client.SubmitUpdate(chunks(header(), b"junk" * 10 + good[40:]), metadata=meta),
        invalid,
        "codec_error",
    )
    await expect(
        client.SubmitUpdate(chunks(header(round_id="9.1"), good), metadata=meta),
        grpc.StatusCode.FAILED_PRECONDITION,
        "round_closed",
    )
    await expect(
        client.SubmitUpdate(chunks(header(codec="pickle"), good), metadata=meta),
        invalid,
        "unknown_codec",
    )
    await expect(
        client.SubmitUpdate(chunks(header(total_size=LIMIT + 1), b""), metadata=meta),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "payload_too_large",
    )
    await expect(  # a size no body has: refused before any is read, not a server fault
        client.SubmitUpdate(chunks(header(total_size=-1), b""), metadata=meta),
        invalid,
        "invalid_update",
    )
    await expect(
        client.SubmitUpdate(chunks(header(), good + b"extra"), metadata=meta),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "payload_too_large",
    )
    await expect(
        client.SubmitUpdate(chunks(header(), good[:-5]), metadata=meta), invalid, "invalid_update"
    )
    await expect(
        client.SubmitUpdate([pb.UpdateChunk(data=good)], metadata=meta), invalid, "invalid_update"
    )
    # a whole body and then a second header: one header an upload, not an empty chunk
    second_header = [*chunks(header(), good), pb.UpdateChunk(header=header())]
    await expect(client.SubmitUpdate(second_header, metadata=meta), invalid, "invalid_update")
    await expect(
        client.Heartbeat(
            pb.HeartbeatRequest(), metadata=(("fedgate-client-id", "nobody"), meta[1])
        ),
        grpc.StatusCode.NOT_FOUND,
        "unknown_client",
    )
    await expect(
        client.Heartbeat(pb.HeartbeatRequest()), grpc.StatusCode.UNAUTHENTICATED, "unauthorized"
    )
    assert federation.round is not None and federation.round.aggregator.count == 0
    receipt = await client.SubmitUpdate(chunks(header(), good), metadata=meta)
    assert receipt.accepted == 1


def odd_chunks(header: pb.UpdateHeader, body: bytes) -> list[pb.UpdateChunk]:
    """``body`` in pieces of odd sizes (an empty one too), after ``header``."""
    parts, start = [pb.UpdateChunk(header=header)], 0
    for size in [1, 0, 7, 4097, 3, len(body)]:
        parts.append(pb.UpdateChunk(data=body[start : start + size]))
        start += size
    return parts


async def test_an_upload_in_odd_chunks_must_be_exactly_its_declared_size(
    stubs: tuple[Any, Any, Federation],
) -> None:
    """One byte over is refused as soon as it arrives, one byte under at the end; exactly
    the declared size, in pieces of any size, is the update."""
    client, _, federation = stubs
    meta, task = await joined_with_a_task(client, federation)
    good = get_codec("raw").encode(tiny_model(1.0))
    header = pb.UpdateHeader(round_id=task.round_id, model_version=0, num_examples=10, codec="raw")
    header.total_size = len(good)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    too_large = grpc.StatusCode.RESOURCE_EXHAUSTED
    await expect(
        client.SubmitUpdate(odd_chunks(header, good + b"x"), metadata=meta),
        too_large,
        "payload_too_large",
    )
    await expect(
        client.SubmitUpdate(odd_chunks(header, good[:-1]), metadata=meta), invalid, "invalid_update"
    )
    receipt = await client.SubmitUpdate(odd_chunks(header, good), metadata=meta)
    assert receipt.accepted == 1


async def test_models_stream_in_chunks(stubs: tuple[Any, Any, Federation]) -> None:
    client, _, federation = stubs
    big = {"w": torch.randn(3, CHUNK_BYTES // 4)}  # three chunks and a bit
    federation.models.publish(big)
    ack = await client.Join(pb.JoinRequest(name="w", codec="raw"))
    meta = (("fedgate-client-id", ack.client_id), ("authorization", f"Bearer {ack.token}"))
    parts = [c async for c in client.FetchModel(pb.FetchModelRequest(version=1), metadata=meta)]
    assert len(parts) == 5 and parts[0].total_size == sum(len(p.data) for p in parts)
    assert [len(p.data) for p in parts[1:4]] == [CHUNK_BYTES] * 3  # after a header alone
    body = b"".join(p.data for p in parts)
    assert body == (await federation.models.encoded(1, "raw")).payload
    assert torch.equal(get_codec("raw").decode(body)["w"], big["w"])


async def test_the_operator_service_watches_and_steers(stubs: tuple[Any, Any, Federation]) -> None:
    _, operator, federation = stubs
    await expect(
        operator.GetStatus(pb.StatusRequest()), grpc.StatusCode.UNAUTHENTICATED, "unauthorized"
    )
    watch = operator.WatchStatus(pb.StatusRequest(), metadata=ADMIN)
    first = await anext(aiter(watch))
    assert first.state == "idle"
    federation.start()
    status = await operator.UpdateConfig(
        pb.ConfigChange(rounds=5, learning_rate=0.2), metadata=ADMIN
    )
    assert status.pending_config.rounds == 5 and status.config.rounds == 2
    assert (await operator.Pause(pb.ControlRequest(), metadata=ADMIN)).state == "paused"
    assert (await operator.Resume(pb.ControlRequest(), metadata=ADMIN)).state in (
        "waiting",
        "running",
    )
    await expect(
        operator.UpdateConfig(pb.ConfigChange(rounds=0), metadata=ADMIN),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_config",
    )
    await expect(
        operator.Kick(pb.KickRequest(client_id="nobody"), metadata=ADMIN),
        grpc.StatusCode.NOT_FOUND,
        "unknown_client",
    )
    assert (await operator.Stop(pb.ControlRequest(), metadata=ADMIN)).state == "stopped"
    seen = [s.state async for s in watch]
    assert seen[-1] == "stopped"
    await expect(
        operator.Resume(pb.ControlRequest(), metadata=ADMIN),
        grpc.StatusCode.FAILED_PRECONDITION,
        "run_not_active",
    )
    assert federation.state is RunState.STOPPED


async def test_a_task_streams_with_its_model_in_chunks(
    stubs: tuple[Any, Any, Federation],
) -> None:
    """NextTaskWithModel: the task, then the model's chunks, byte for byte what
    FetchModel sends for the same codec."""
    client, _, federation = stubs
    federation.models.publish({"w": torch.randn(3, CHUNK_BYTES // 4)})  # several chunks
    federation.start()
    ack = await client.Join(pb.JoinRequest(name="w", codec="raw"))
    meta = (("fedgate-client-id", ack.client_id), ("authorization", f"Bearer {ack.token}"))
    request = pb.NextTaskWithModelRequest(wait_s=5, codec="raw")
    parts = [p async for p in client.NextTaskWithModel(request, metadata=meta)]
    assert [p.WhichOneof("part") for p in parts[:2]] == ["task", "model"]
    assert parts[0].task.kind == pb.TASK_KIND_TRAIN and parts[0].task.model_version == 1
    assert len(parts) > 4 and {p.WhichOneof("part") for p in parts[1:]} == {"model"}
    fetch = pb.FetchModelRequest(version=1, codec="raw")
    fetched = [c async for c in client.FetchModel(fetch, metadata=meta)]
    assert [p.model for p in parts[1:]] == fetched


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (pb.NextTaskWithModelRequest(codec="gzip"), "INVALID_ARGUMENT", "unknown_codec"),
        (pb.NextTaskWithModelRequest(have_ref="x" * 65), "INVALID_ARGUMENT", "bad_request"),
    ],
)
async def test_a_task_with_model_request_past_the_limits_is_refused_before_a_task(
    stubs: tuple[Any, Any, Federation],
    request_: pb.NextTaskWithModelRequest,
    status: str,
    code: str,
) -> None:
    client, _, federation = stubs
    federation.start()
    ack = await client.Join(pb.JoinRequest(name="w", codec="raw"))
    meta = (("fedgate-client-id", ack.client_id), ("authorization", f"Bearer {ack.token}"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [p async for p in client.NextTaskWithModel(request_, metadata=meta)]
    assert code_of(caught.value) == (grpc.StatusCode[status], code)
    assert federation.clients.get(ack.client_id).state.value == "joined"  # no task taken
    forged = (("fedgate-client-id", ack.client_id), ("authorization", "Bearer forged"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [p async for p in client.NextTaskWithModel(pb.NextTaskWithModelRequest(), metadata=forged)]
    assert code_of(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "unauthorized")
