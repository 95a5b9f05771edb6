"""Models and updates in chunks on the gRPC wire: the hand-framed chunks are exactly what
protobuf would write, read back the short way only when they are exactly one field, and
a model put back together is byte for byte the one sent, whichever way it was read."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from fedgate.core.messages import EncodedModel, Task, TaskKind, TrainConfig
from fedgate.errors import TransportError
from fedgate.transport.filling import FILL_ON_LOOP_BYTES
from fedgate.transport.grpc import serde, streams
from fedgate.transport.grpc.proto import fedgate_pb2 as pb

TRAIN = Task(TaskKind.TRAIN, 2, "2.1", 1, 9.5, TrainConfig(0.1, 2, 16, round=2))
MODEL = EncodedModel(1, "raw", bytes(range(256)) * 5, ref="1.ab2", base_ref="0")
# around each varint length boundary, and a chunk of the real size (never empty: `slices`
# yields none, and protobuf would leave an empty ModelChunk.data out altogether)
SIZES = [1, 127, 128, 16_383, 16_384, (1 << 21) + 3]


async def streamed(parts: Iterable[Any]) -> AsyncIterator[Any]:
    for part in parts:
        yield part


def through_wire(
    items: Iterable[Any], to_wire: Callable[[Any], bytes], from_wire: Callable[[bytes], Any]
) -> list[Any]:
    """``items`` as the server writes them and the client reads them."""
    return [from_wire(to_wire(item)) for item in items]


@pytest.mark.parametrize("size", SIZES)
def test_hand_framed_chunks_are_the_protobuf_encoding(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    view = memoryview(data)
    assert streams.model_chunk_to_wire(view) == pb.ModelChunk(data=data).SerializeToString()
    assert streams.update_chunk_to_wire(view) == pb.UpdateChunk(data=data).SerializeToString()
    task_part = pb.TaskPart(model=pb.ModelChunk(data=data)).SerializeToString()
    assert streams.task_part_to_wire(view) == task_part
    for back_view in (
        streams.model_chunk_from_wire(streams.model_chunk_to_wire(view)),
        streams.task_part_from_wire(task_part),
    ):
        assert isinstance(back_view, memoryview) and back_view == data  # a slice, no copy
    wired = streams.update_chunk_to_wire(view)
    back = streams.update_chunk_from_wire(wired)
    assert isinstance(back, memoryview) and back == data and back.obj is wired  # no copy


@pytest.mark.parametrize(
    "message",
    [
        pb.UpdateChunk(header=pb.UpdateHeader(round_id="1.1", total_size=3)),
        pb.UpdateChunk(),  # no part at all
    ],
)
def test_an_update_chunk_that_is_not_bytes_alone_is_parsed(message: pb.UpdateChunk) -> None:
    back = streams.update_chunk_from_wire(message.SerializeToString())
    assert isinstance(back, pb.UpdateChunk) and back == message


def test_bytes_with_anything_after_them_take_the_protobuf_way() -> None:
    """A data field followed by another field (here: a header) is not one field: protobuf
    reads it (the last member of the oneof wins, as it would anywhere)."""
    data = pb.UpdateChunk(data=b"abc").SerializeToString()
    header = pb.UpdateChunk(header=pb.UpdateHeader(round_id="1.1")).SerializeToString()
    back = streams.update_chunk_from_wire(data + header)
    assert isinstance(back, pb.UpdateChunk) and back.WhichOneof("part") == "header"


@pytest.mark.parametrize(
    "message",
    [
        b"\x12\x05abc",  # declares 5 bytes, carries 3
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a varint that never ends
        b"\x12",  # a tag alone
    ],
)
def test_a_truncated_or_garbled_chunk_is_refused_by_protobuf(message: bytes) -> None:
    with pytest.raises(DecodeError):
        streams.update_chunk_from_wire(message)


def test_a_model_header_is_read_as_a_message() -> None:
    header = serde.model_header_to_proto(MODEL, b"")
    back = streams.model_chunk_from_wire(header.SerializeToString())
    assert isinstance(back, pb.ModelChunk) and back == header


@pytest.mark.parametrize("chunk_bytes", [100, 333, 1 << 20])
async def test_a_model_streams_and_reassembles_byte_identically(chunk_bytes: int) -> None:
    items = list(streams.model_chunks(MODEL, chunk_bytes))
    assert len(items) == 1 + -(-len(MODEL.payload) // chunk_bytes)  # the header, the slices
    wired = through_wire(items, streams.model_chunk_to_wire, streams.model_chunk_from_wire)
    assert await streams.model_from_chunks(streamed(wired)) == MODEL
    # a client reading with the generated protobuf classes gets the same model
    parsed = [pb.ModelChunk.FromString(streams.model_chunk_to_wire(item)) for item in items]
    assert parsed[0].total_size == sum(len(p.data) for p in parsed) == len(MODEL.payload)
    assert b"".join(p.data for p in parsed) == MODEL.payload
    assert await streams.model_from_chunks(streamed(parsed)) == MODEL


async def test_a_model_from_a_server_that_sends_bytes_in_its_header_reassembles() -> None:
    """Servers before the bytes-alone chunks put the first bytes in the header."""
    payload = bytes(MODEL.payload)
    head, rest = payload[:300], payload[300:]
    chunks = [serde.model_header_to_proto(MODEL, head), pb.ModelChunk(data=rest)]
    assert await streams.model_from_chunks(streamed(chunks)) == MODEL


@pytest.mark.parametrize(
    "task",
    [TRAIN, dataclasses.replace(TRAIN, model=MODEL), Task(TaskKind.WAIT), Task(TaskKind.STOP)],
)
@pytest.mark.parametrize("chunk_bytes", [100, 1 << 20])
async def test_a_task_and_its_model_round_trip_in_parts(task: Task, chunk_bytes: int) -> None:
    parts = list(streams.task_parts(task, chunk_bytes))
    expected_chunks = 1 + -(-len(MODEL.payload) // chunk_bytes) if task.model else 0
    assert len(parts) == 1 + expected_chunks
    wired = through_wire(parts, streams.task_part_to_wire, streams.task_part_from_wire)
    back = await streams.task_from_parts(streamed(wired))
    assert back == task and back.model == task.model
    parsed = [pb.TaskPart.FromString(streams.task_part_to_wire(part)) for part in parts]
    assert await streams.task_from_parts(streamed(parsed)) == task


def header_of(size: int) -> pb.ModelChunk:
    return pb.ModelChunk(version=1, codec="raw", total_size=size)


@pytest.mark.parametrize(
    "chunks",
    [
        [header_of(10), memoryview(b"x" * 11)],  # one byte more than declared
        [header_of(10), memoryview(b"x" * 4), memoryview(b"x" * 5)],  # one byte less
        [memoryview(b"x" * 10)],  # bytes before any header
        [header_of(-1)],  # a size no model has
        [],  # nothing at all
    ],
)
async def test_a_download_of_the_wrong_size_is_a_transport_error(chunks: list[Any]) -> None:
    with pytest.raises(TransportError):
        await streams.model_from_chunks(streamed(chunks))


async def test_a_download_in_odd_pieces_of_exactly_its_size_reassembles() -> None:
    payload = bytes(range(256)) * 41
    pieces, start = [], 0
    for size in [1, 0, 7, 4096, 3, 1000, len(payload)]:
        pieces.append(memoryview(payload)[start : start + size])
        start += size
    chunks = [header_of(len(payload)), *pieces]
    model = await streams.model_from_chunks(streamed(chunks))
    # the buffer the pieces were copied into, handed over (a decoder's tensors share it)
    assert type(model.payload) is bytearray and model.payload == payload


async def test_a_large_download_is_filled_off_the_loop_byte_identically() -> None:
    payload = bytes(range(251)) * (5 * FILL_ON_LOOP_BYTES // 251)  # several worker copies
    model = dataclasses.replace(MODEL, payload=payload)
    wired = through_wire(
        list(streams.model_chunks(model, 300_001)),
        streams.model_chunk_to_wire,
        streams.model_chunk_from_wire,
    )
    back = await streams.model_from_chunks(streamed(wired))
    assert type(back.payload) is bytearray and back.payload == payload


async def test_a_declared_size_no_memory_holds_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="more than this process can hold"):
        await streams.model_from_chunks(streamed([header_of(1 << 62), memoryview(b"x")]))


@pytest.mark.parametrize(
    "parts",
    [
        [],  # nothing at all
        [pb.TaskPart(model=pb.ModelChunk(total_size=1, data=b"x"))],  # no task first
        [memoryview(b"x")],  # bytes first
        [pb.TaskPart(task=serde.task_to_proto(TRAIN))] * 2,  # a second task
        [pb.TaskPart(task=serde.task_to_proto(TRAIN)), memoryview(b"x")],  # bytes, no header
        # a model longer, or shorter, than its header says
        [
            pb.TaskPart(task=serde.task_to_proto(TRAIN)),
            pb.TaskPart(model=pb.ModelChunk(total_size=2, data=b"abc")),
        ],
        [
            pb.TaskPart(task=serde.task_to_proto(TRAIN)),
            pb.TaskPart(model=pb.ModelChunk(total_size=4)),
            memoryview(b"abc"),
        ],
    ],
)
async def test_a_malformed_task_reply_is_a_transport_error(parts: list[Any]) -> None:
    with pytest.raises(TransportError):
        await streams.task_from_parts(streamed(parts))
