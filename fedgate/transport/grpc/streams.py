"""Models in chunks on the gRPC wire: cut up by the server, put together by the client.

FetchModel streams `ModelChunk`s; NextTaskWithModel streams `TaskPart`s, the task first
and then the same chunks; Work sends them as `WorkDown` models. All are cut and
reassembled here, with the same checks, so a model arrives byte for byte the same
whichever call carried it.

The bulk of a model or an update is chunks that carry nothing but bytes. Through
protobuf message objects each such chunk was copied three times before grpc's own copy
(sliced out of the payload, set into a message, serialised) and twice after it (parsed,
read out of ``data``); on loopback those copies cost more than the transfer. So a chunk
of bytes alone is not a message object here: going out it is the slice itself (a
``memoryview``), framed by hand as the one length-delimited field it is (`*_to_wire`: one
copy); coming in it is a slice of the received message (`*_from_wire`). The bytes on the
wire are exactly the protobuf encoding of the message, and only a message that is
exactly that one field takes the short way in: anything else (headers, tasks, unknown
fields, garbage) is parsed by protobuf as before, with its checks and errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, Callable, Iterator
from typing import Any

import grpc

from fedgate.core.messages import EncodedModel, Task
from fedgate.errors import TransportError
from fedgate.transport.filling import Filling
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.channel import CHUNK_BYTES
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.slicing import slices

# The one field each message's bytes travel in, as its tag byte (field number << 3 | 2).
MODEL_DATA = 4 << 3 | 2  # ModelChunk.data
TASK_MODEL = 2 << 3 | 2  # TaskPart.model
UPDATE_DATA = 2 << 3 | 2  # UpdateChunk.data
WORK_MODEL = 2 << 3 | 2  # WorkDown.model
WORK_UPDATE = 2 << 3 | 2  # WorkUp.update
MAX_VARINT_BYTES = 10

ModelPart = pb.ModelChunk | memoryview  # a header (or any chunk) as a message, or bytes alone
TaskItem = pb.TaskPart | memoryview  # the task as a message, or a model's bytes alone
UpdateItem = pb.UpdateChunk | memoryview  # going out: the header, or the update's bytes
UpdateData = pb.UpdateChunk | memoryview  # coming in: a message, or a data chunk's bytes
WorkUpItem = pb.WorkUp | memoryview  # an ask or an update's header, or an update's bytes
WorkDownItem = pb.WorkDown | memoryview  # a task, a model's header or a receipt, or bytes


def model_chunks(model: EncodedModel, chunk_bytes: int = CHUNK_BYTES) -> Iterator[ModelPart]:
    """A model download: the header (without bytes), then the payload in slices."""
    yield serde.model_header_to_proto(model, b"")
    yield from slices(model.payload, chunk_bytes)


def task_parts(task: Task, chunk_bytes: int = CHUNK_BYTES) -> Iterator[TaskItem]:
    """A NextTaskWithModel reply: the task, then its model's chunks if it carries one."""
    yield pb.TaskPart(task=serde.task_to_proto(task))
    if task.model is not None:
        yield pb.TaskPart(model=serde.model_header_to_proto(task.model, b""))
        yield from slices(task.model.payload, chunk_bytes)


# ---- the wire: serialisers and deserialisers for grpc ---------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, size: int) -> bytes:
    return bytes((tag,)) + varint(size)


def _bytes_field(tag: int, data: memoryview) -> bytes:
    """``data`` framed as the one length-delimited field ``tag`` of a message."""
    return b"".join((_field(tag, len(data)), data))


def model_chunk_to_wire(item: ModelPart) -> bytes:
    if isinstance(item, memoryview):
        return _bytes_field(MODEL_DATA, item)
    return item.SerializeToString()


def _nested_bytes_field(outer: int, inner: int, data: memoryview) -> bytes:
    """``data`` as the one field ``inner`` of the one message field ``outer``."""
    head = _field(inner, len(data))
    return b"".join((_field(outer, len(head) + len(data)), head, data))


def task_part_to_wire(item: TaskItem) -> bytes:
    if isinstance(item, memoryview):
        return _nested_bytes_field(TASK_MODEL, MODEL_DATA, item)
    return item.SerializeToString()


def work_down_to_wire(item: WorkDownItem) -> bytes:
    if isinstance(item, memoryview):
        return _nested_bytes_field(WORK_MODEL, MODEL_DATA, item)
    return item.SerializeToString()


def work_up_to_wire(item: WorkUpItem) -> bytes:
    if isinstance(item, memoryview):
        return _nested_bytes_field(WORK_UPDATE, UPDATE_DATA, item)
    return item.SerializeToString()


def update_chunk_to_wire(item: UpdateItem) -> bytes:
    if isinstance(item, memoryview):
        return _bytes_field(UPDATE_DATA, item)
    return item.SerializeToString()


def _one_field(message: memoryview, tag: int) -> memoryview | None:
    """The contents of ``message`` if it is exactly one length-delimited field ``tag``."""
    if len(message) < 2 or message[0] != tag:
        return None
    size, shift, position = 0, 0, 1
    while position < min(len(message), 1 + MAX_VARINT_BYTES):
        byte = message[position]
        size |= (byte & 0x7F) << shift
        shift, position = shift + 7, position + 1
        if not byte & 0x80:
            return message[position:] if size == len(message) - position else None
    return None


def model_chunk_from_wire(message: bytes) -> ModelPart:
    """A chunk of bytes alone as a slice of ``message`` (no copy); else the message."""
    data = _one_field(memoryview(message), MODEL_DATA)
    return pb.ModelChunk.FromString(message) if data is None else data


def _nested_one_field(message: bytes, outer: int, inner: int) -> memoryview | None:
    """The contents of ``message`` if it is exactly one field ``outer`` that is exactly
    one field ``inner``."""
    contents = _one_field(memoryview(message), outer)
    return None if contents is None else _one_field(contents, inner)


def task_part_from_wire(message: bytes) -> TaskItem:
    data = _nested_one_field(message, TASK_MODEL, MODEL_DATA)
    return pb.TaskPart.FromString(message) if data is None else data


def work_down_from_wire(message: bytes) -> WorkDownItem:
    data = _nested_one_field(message, WORK_MODEL, MODEL_DATA)
    return pb.WorkDown.FromString(message) if data is None else data


def work_up_from_wire(message: bytes) -> WorkUpItem:
    """An update's data chunk as a slice of ``message``; any other message parsed."""
    data = _nested_one_field(message, WORK_UPDATE, UPDATE_DATA)
    return pb.WorkUp.FromString(message) if data is None else data


def update_chunk_from_wire(message: bytes) -> UpdateData:
    """The bytes of a data chunk as a slice of ``message`` (no copy: the server copies
    them once, into the buffer the update is assembled in); any other message parsed."""
    data = _one_field(memoryview(message), UPDATE_DATA)
    return pb.UpdateChunk.FromString(message) if data is None else data


# ---- the server: the Federation service with these (de)serialisers ------------------

# The Federation calls whose bulk bytes take the short way (see the module's docstring).
CHUNK_SERIALIZERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "FetchModel": {"response_serializer": model_chunk_to_wire},
    "NextTaskWithModel": {"response_serializer": task_part_to_wire},
    "SubmitUpdate": {"request_deserializer": update_chunk_from_wire},
    "Work": {
        "request_deserializer": work_up_from_wire,
        "response_serializer": work_down_to_wire,
    },
}


class WithChunkSerializers:
    """The server, as the generated code registering the Federation service sees it: the
    handlers it builds are registered with the chunk (de)serialisers swapped in. (The
    generated code stays the one list of methods; only those in CHUNK_SERIALIZERS differ.)"""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: `add_registered_method_handlers`, called next, adds both."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        if missing := set(CHUNK_SERIALIZERS) - set(handlers):
            raise RuntimeError(f"{service} has no {sorted(missing)}: regenerate the stubs")
        swapped = {
            name: handler._replace(**CHUNK_SERIALIZERS.get(name, {}))
            for name, handler in handlers.items()
        }
        generic = grpc.method_handlers_generic_handler(service, swapped)
        self.server.add_generic_rpc_handlers((generic,))
        self.server.add_registered_method_handlers(service, swapped)
        self.registered.append(service)


def add_federation_servicer(servicer: pb_grpc.FederationServicer, server: grpc.aio.Server) -> None:
    """`add_FederationServicer_to_server`, with `CHUNK_SERIALIZERS`."""
    registrar = WithChunkSerializers(server)
    pb_grpc.add_FederationServicer_to_server(servicer, registrar)  # type: ignore[arg-type]
    if not registrar.registered:  # generated code of another grpc version: say so at start
        raise RuntimeError("the generated code did not register the Federation service")


# ---- the client: putting a model together ---------------------------------------------


class ModelAssembly:
    """A model's chunks put back together: the header first, then its bytes, each chunk
    copied into its place as it comes (`Filling`); more bytes than the header declared, or
    fewer by the end, fail the download (a TransportError: the transfer went wrong)."""

    def __init__(self) -> None:
        self.header: pb.ModelChunk | None = None
        self._filling: Filling | None = None

    def add(self, chunk: ModelPart) -> None:
        if isinstance(chunk, memoryview):
            data: bytes | memoryview = chunk
        else:
            self.header = self.header or chunk
            data = chunk.data
        filling = self._filling_for(self.header)
        try:
            filling.add(data)
        except ValueError:  # a piece past the declared size: refused, nothing of it kept
            raise TransportError(
                f"model download passed its declared {filling.size} bytes"
            ) from None

    def _filling_for(self, header: pb.ModelChunk | None) -> Filling:
        if self._filling is None:
            if header is None:
                raise TransportError("a model download must start with its header")
            if header.total_size < 0:
                raise TransportError(f"the server declared a model of {header.total_size} bytes")
            try:
                self._filling = Filling(header.total_size)
            except MemoryError:
                raise TransportError(
                    f"the server declared a model of {header.total_size} bytes,"
                    " more than this process can hold"
                ) from None
        return self._filling

    def add_part(self, part: TaskItem | WorkDownItem, refusal: str) -> None:
        """A chunk that came in a task's answer: bytes alone, or a message's ``model``;
        any other message fails the download with ``refusal``."""
        if isinstance(part, memoryview):
            self.add(part)
        elif part.WhichOneof("part") == "model":
            self.add(part.model)
        else:
            raise TransportError(refusal)

    @property
    def complete(self) -> bool:
        """Whether the header and all the bytes it declared have come."""
        return self._filling is not None and self._filling.filled == self._filling.size

    async def model(self) -> EncodedModel:
        if self.header is None or self._filling is None or not self.complete:
            filled = self._filling.filled if self._filling else 0
            declared = self.header.total_size if self.header else "?"
            raise TransportError(f"model download ended after {filled} of {declared} bytes")
        return serde.model_from_proto(self.header, await self._filling.result())


async def model_from_chunks(chunks: AsyncIterable[ModelPart]) -> EncodedModel:
    assembly = ModelAssembly()
    async for chunk in chunks:
        assembly.add(chunk)
    return await assembly.model()


async def task_from_parts(reply: AsyncIterable[TaskItem]) -> Task:
    """The task a NextTaskWithModel reply carries, with its model if one followed it."""
    parts = aiter(reply)
    first = await anext(parts, None)
    if first is None or isinstance(first, memoryview) or first.WhichOneof("part") != "task":
        raise TransportError("a task reply must start with its task")
    task = serde.task_from_proto(first.task)
    assembly = ModelAssembly()
    async for part in parts:
        assembly.add_part(part, "a task reply carries one task, then only its model")
    if assembly.header is None:
        return task
    return dataclasses.replace(task, model=await assembly.model())
