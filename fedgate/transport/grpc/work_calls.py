"""The Work call, the server's end (the client's: `fedgate.transport.grpc.work`).

Who may hold a call open: only a client whose credentials pass when the call opens (and
at each ask and update after), one call per client (a new one ends the one before, so
a client that reconnects does not leave its old call behind, and one client cannot pile
calls up); the server's limits on calls and streams per connection bound the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fedgate.core.messages import Task, UpdateReceipt
from fedgate.core.service import FederationService
from fedgate.errors import Conflict, InvalidUpdate, TransportError
from fedgate.transport.grpc import serde, uploads
from fedgate.transport.grpc.channel import CHUNK_BYTES
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.streams import WorkDownItem, WorkUpItem
from fedgate.transport.limits import UploadTimeouts
from fedgate.transport.slicing import slices


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
