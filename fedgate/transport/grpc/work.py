"""The Work call, the client's end: a client's asks and updates on one long-lived gRPC call.

Per call, a round costs the wire two calls a client (NextTaskWithModel down,
SubmitUpdate up), and grpc sets each up and tears it down: on two cores beside ten
training clients that was most of the transport's CPU. A bare grpc.aio measurement of the
same round (153 KB each way, ten clients): 0.76 ms of server CPU a client and round with
the two streaming calls, 0.53 with two unary ones, 0.21 on one bidirectional call kept
open. So a client keeps one Work call open and sends each ask and update on it; the
answers are the messages the single calls would have sent, and a refusal ends the call
with the single call's status (the client's next ask opens another). See the proto; the
server's end is `fedgate.transport.grpc.work_calls` (apart, so that a client process
loads none of the server's core).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any, NoReturn

import grpc

from fedgate.core.messages import ModelWant, Task, Update, UpdateReceipt
from fedgate.errors import TransportError
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.call_status import ServerStatus
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.streams import ModelAssembly, WorkDownItem, WorkUpItem
from fedgate.transport.slicing import slices

# A client opens a new Work call after this long: the server asks a connection to go
# away after an hour (`ConnectionLimits.grpc_max_age_s`) and cuts its calls later still;
# a call that is renewed well before never meets that cut mid-round.
RENEW_AFTER_S = 600.0
CLOSE_WAIT_S = 1.0


class WorkStream:
    """A client's Work call: one ask or update at a time, each read to its answer. Any
    failure leaves the call in no known state: its owner drops it and opens another."""

    def __init__(self, call: Any, token: str) -> None:
        self.call = call
        self._status = ServerStatus(call)
        self.token = token  # the session it was opened with
        self.opened = time.monotonic()

    @property
    def worn(self) -> bool:
        return time.monotonic() - self.opened > RENEW_AFTER_S

    async def next_task(self, want: ModelWant, wait_s: float) -> Task:
        await self._write(pb.WorkUp(ask=serde.model_want_to_proto(want, wait_s)))
        first = await self._read()
        if isinstance(first, memoryview) or first.WhichOneof("part") != "task":
            raise TransportError("the server answered an ask with something other than a task")
        task = serde.task_from_proto(first.task)
        if not first.model_follows:
            return task
        assembly = ModelAssembly()
        while not assembly.complete:
            assembly.add_part(await self._read(), "a task's model was cut off by another message")
        return dataclasses.replace(task, model=await assembly.model())

    async def submit(self, update: Update, chunk_bytes: int) -> UpdateReceipt:
        header = pb.UpdateChunk(header=serde.update_header_to_proto(update))
        await self._write(pb.WorkUp(update=header))
        for piece in slices(update.payload, chunk_bytes):
            await self._write(piece)
        reply = await self._read()
        if isinstance(reply, memoryview) or reply.WhichOneof("part") != "receipt":
            raise TransportError(
                "the server answered an update with something other than a receipt"
            )
        return serde.receipt_from_proto(reply.receipt)

    async def close(self) -> None:
        """End the call from this side, and wait (briefly) for the server's handler to
        return: a channel closed at once would cancel the call, which the server counts
        as such."""
        if self.call.done():
            return
        with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError, TimeoutError):
            await self.call.done_writing()
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.call.read()  # EOF once the server has ended the call

    def drop(self) -> None:
        """Cancel the call (after a failure, its state is not known)."""
        self.call.cancel()

    async def _write(self, item: WorkUpItem) -> None:
        try:
            await self.call.write(item)
        except asyncio.InvalidStateError:  # the server has ended the call
            await self._ended()
        except grpc.aio.AioRpcError as error:  # it may stand in for the server's status
            raise self._status.server_error(error) from None

    async def _read(self) -> WorkDownItem:
        message = await self.call.read()
        if message is grpc.aio.EOF:
            await self._ended()
        assert isinstance(message, pb.WorkDown | memoryview)
        return message

    async def _ended(self) -> NoReturn:
        """Raise why the call ended: its status (an AioRpcError, which the transport
        translates), or a TransportError for a call that ended without an error."""
        await self.call.read()  # on an ended call, raises its status unless it is OK
        raise TransportError("the server ended the Work call")
