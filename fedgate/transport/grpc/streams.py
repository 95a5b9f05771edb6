"""Models in chunks on the gRPC wire: cut up by the server, put together by the client.

FetchModel streams `ModelChunk`s; NextTaskWithModel streams `TaskPart`s, the task first
and then the same chunks. Both are cut and reassembled here, with the same checks, so a
model arrives byte for byte the same whichever call carried it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, Iterator

from fedgate.core.messages import EncodedModel, Task
from fedgate.errors import TransportError
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.channel import CHUNK_BYTES
from fedgate.transport.grpc.proto import fedgate_pb2 as pb


def model_chunks(model: EncodedModel, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.ModelChunk]:
    """The chunks of a model download: the header with the first bytes, then the rest."""
    view = memoryview(model.payload)
    yield serde.model_header_to_proto(model, bytes(view[:chunk_bytes]))
    for start in range(chunk_bytes, len(view), chunk_bytes):
        yield pb.ModelChunk(data=bytes(view[start : start + chunk_bytes]))


def task_parts(task: Task, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.TaskPart]:
    """A NextTaskWithModel reply: the task, then its model's chunks if it carries one."""
    yield pb.TaskPart(task=serde.task_to_proto(task))
    if task.model is not None:
        for chunk in model_chunks(task.model, chunk_bytes):
            yield pb.TaskPart(model=chunk)


class ModelAssembly:
    """A model's chunks put back together; more bytes than the header declared, or fewer
    by the end, fail the download (a TransportError: the transfer went wrong)."""

    def __init__(self) -> None:
        self.header: pb.ModelChunk | None = None
        self._body = bytearray()

    def add(self, chunk: pb.ModelChunk) -> None:
        self.header = self.header or chunk
        self._body += chunk.data
        if len(self._body) > self.header.total_size:
            raise TransportError(
                f"model download passed its declared {self.header.total_size} bytes"
            )

    def model(self) -> EncodedModel:
        if self.header is None or len(self._body) != self.header.total_size:
            declared = self.header.total_size if self.header else "?"
            raise TransportError(
                f"model download ended after {len(self._body)} of {declared} bytes"
            )
        return serde.model_from_proto(self.header, bytes(self._body))


async def model_from_chunks(chunks: AsyncIterable[pb.ModelChunk]) -> EncodedModel:
    assembly = ModelAssembly()
    async for chunk in chunks:
        assembly.add(chunk)
    return assembly.model()


async def task_from_parts(reply: AsyncIterable[pb.TaskPart]) -> Task:
    """The task a NextTaskWithModel reply carries, with its model if one followed it."""
    parts = aiter(reply)
    first = await anext(parts, None)
    if first is None or first.WhichOneof("part") != "task":
        raise TransportError("a task reply must start with its task")
    task = serde.task_from_proto(first.task)
    assembly = ModelAssembly()
    async for part in parts:
        if part.WhichOneof("part") != "model":
            raise TransportError("a task reply carries one task, then only its model")
        assembly.add(part.model)
    if assembly.header is None:
        return task
    return dataclasses.replace(task, model=assembly.model())
