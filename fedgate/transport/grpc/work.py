"""The Work call: a client's asks and updates on one long-lived gRPC call, both ends.

Per call, a round costs the wire two calls a client (NextTaskWithModel down,
SubmitUpdate up), and grpc sets each up and tears it down: on two cores beside ten
training clients that was most of the transport's CPU. A bare grpc.aio measurement of the
same round (153 KB each way, ten clients): 0.76 ms of server CPU a client and round with
the two streaming calls, 0.53 with two unary ones, 0.21 on one bidirectional call kept
open. So a client keeps one Work call open and sends each ask and update on it; the
answers are the messages the single calls would have sent, and a refusal ends the call
with the single call's status (the client's next ask opens another). See the proto.

Who may hold a call open: only a client whose credentials pass when the call opens (and
at each ask and update after), one call per client (a new one ends the one before, so
a client that reconnects does not leave its old call behind, and one client cannot pile
calls up); the server's limits on calls and streams per connection bound the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import grpc

from fedgate.core.messages import ModelWant, Task, Update, UpdateReceipt
from fedgate.core.service import FederationService
from fedgate.errors import Conflict, InvalidUpdate, TransportError
from fedgate.transport.grpc import serde, uploads
from fedgate.transport.grpc.channel import CHUNK_BYTES
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.streams import ModelAssembly, WorkDownItem, WorkUpItem
from fedgate.transport.limits import UploadTimeouts
from fedgate.transport.slicing import slices

# A client opens a new Work call after this long: the server asks a connection to go
# away after an hour (`ConnectionLimits.grpc_max_age_s`) and cuts its calls later still;
# a call that is renewed well before never meets that cut mid-round.
RENEW_AFTER_S = 600.0
CLOSE_WAIT_S = 1.0


# ---- the server's end ---------------------------------------------------------------


def task_down(task: Task, chunk_bytes: int = CHUNK_BYTES) -> Iterator[WorkDownItem]:
    """The answer to an ask: the task, then its model's header and bytes if it has one."""
    yield pb.WorkDown(task=serde.task_to_proto(task), model_follows=task.model is not None)
    if task.model is not None:
        yield pb.WorkDown(model=serde.model_header_to_proto(task.model, b""))
        yield from slices(task.model.payload, chunk_bytes)


def update_data(item: WorkUpItem) -> bytes | memoryview:
    """The bytes of one of an update's data messages (anything else: refused)."""
    if isinstance(item, memoryview):
        return item
    if item.WhichOneof("part") != "update" or item.update.WhichOneof("part") != "data":
        raise InvalidUpdate("an update's data was cut off by another message")
    return item.update.data


@dataclasses.dataclass
class OpenCall:
    """A Work call being served: its handler's task, and whether it waits between steps."""

    task: asyncio.Task[Any]
    idle: bool = False
    taken_over: bool = False
    stopping: bool = False  # the server stops


class WorkCalls:
    """The server's Work calls, one per client."""

    def __init__(
        self, federation: FederationService, max_update_bytes: int, timeouts: UploadTimeouts
    ) -> None:
        self.federation = federation
        self.max_update_bytes = max_update_bytes
        self.timeouts = timeouts
        self._open: dict[str, OpenCall] = {}

    async def serve(
        self, client: tuple[str, str], messages: AsyncIterator[WorkUpItem], context: Any
    ) -> None:
        """Answer ``client``'s asks and updates until it ends the call (or one is refused:
        the error ends the call, see `FederationServicer.Work`)."""
        call = self._take_over(client[0])
        try:
            while (message := await self._next_step(call, messages)) is not None:
                await self._answer(client, message, messages, context)
        finally:
            if self._open.get(client[0]) is call:
                del self._open[client[0]]

    def end_waiting(self) -> None:
        """End every call that waits for its client's next step (the server stops: a call
        in a step gets the server's grace period to finish it)."""
        for call in self._open.values():
            call.stopping = True
            if call.idle:
                call.task.cancel()

    def _take_over(self, client_id: str) -> OpenCall:
        """This call, registered as the client's; the one before it told to end (at once if
        it waits for its next step, else once the step it is in is answered)."""
        task = asyncio.current_task()
        assert task is not None  # a grpc handler runs in a task
        before = self._open.get(client_id)
        if before is not None:
            before.taken_over = True
            if before.idle:
                before.task.cancel()
        self._open[client_id] = call = OpenCall(task)
        return call

    async def _next_step(
        self, call: OpenCall, messages: AsyncIterator[WorkUpItem]
    ) -> WorkUpItem | None:
        """The next ask or update's first message; None when the client ended the call. No
        deadline: the client trains between an ask and its update."""
        if not (call.taken_over or call.stopping):
            call.idle = True
            try:
                return await anext(messages, None)
            except asyncio.CancelledError:
                if not (call.taken_over or call.stopping):
                    raise  # the call itself was cancelled (the client went)
                call.task.uncancel()
            finally:
                call.idle = False
        if call.taken_over:
            raise Conflict("this client opened another Work call, which took over from this one")
        raise TransportError("the server is stopping: ask again when it is back")

    async def _answer(
        self,
        client: tuple[str, str],
        message: WorkUpItem,
        messages: AsyncIterator[WorkUpItem],
        context: Any,
    ) -> None:
        kind = None if isinstance(message, memoryview) else message.WhichOneof("part")
        if kind == "ask":
            assert not isinstance(message, memoryview)
            want = serde.model_want_from_proto(message.ask)
            task = await self.federation.next_task(*client, message.ask.wait_s, want)
            for part in task_down(task):
                await context.write(part)
        elif kind == "update":
            assert not isinstance(message, memoryview)
            if message.update.WhichOneof("part") != "header":
                raise InvalidUpdate("an update upload must start with its header")
            receipt = await self._receive(client, message.update.header, messages)
            await context.write(pb.WorkDown(receipt=serde.receipt_to_proto(receipt)))
        else:
            raise InvalidUpdate("a Work call carries asks and updates, each update headed")

    async def _receive(
        self, client: tuple[str, str], header: pb.UpdateHeader, messages: AsyncIterator[WorkUpItem]
    ) -> UpdateReceipt:
        declared = header.total_size

        async def body(limit: int) -> bytearray:
            return await uploads.receive_body(
                messages, update_data, declared, limit, self.timeouts, to_end=False
            )

        return await uploads.receive_update(
            self.federation, client, header, self.max_update_bytes, body
        )


# ---- the client's end ---------------------------------------------------------------


class WorkStream:
    """A client's Work call: one ask or update at a time, each read to its answer. Any
    failure leaves the call in no known state: its owner drops it and opens another."""

    def __init__(self, call: Any, token: str) -> None:
        self.call = call
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
