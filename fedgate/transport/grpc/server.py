"""The gRPC server: thin servicers that map protobuf calls onto one Federation.

Large payloads stream in chunks both ways, so no message ever approaches gRPC's limits;
the limits are still set explicitly, never left at the 4 MB default.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from fedgate.core.federation import Federation
from fedgate.errors import FedgateError, InvalidUpdate, PayloadTooLarge, Unauthorized
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.grpc.status import ERROR_CODE_KEY, status_for

log = logging.getLogger("fedgate.grpc")

CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 16 << 20  # a chunk plus headroom; status replies stay far below it
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
TRANSPORT = "grpc"

R = TypeVar("R")
Handler = Callable[..., Awaitable[R]]


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: FedgateError) -> None:
    await context.abort(
        status_for(error), error.message, trailing_metadata=((ERROR_CODE_KEY, error.code),)
    )


def mapped(handler: Handler[R]) -> Handler[R]:
    """Translate fedgate errors raised by a unary handler into gRPC statuses."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            return await handler(self, request, context)
        except FedgateError as error:
            await abort_with(context, error)
            raise  # abort raises; this line only satisfies the type checker

    return wrapper


def credentials(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, str]:
    """(client id, token) from the call's metadata."""
    metadata = {key: value for key, value in context.invocation_metadata() or ()}
    client_id = metadata.get("fedgate-client-id", "")
    token = str(metadata.get("authorization", "")).removeprefix("Bearer ").strip()
    if not isinstance(client_id, str) or not client_id or not token:
        raise Unauthorized("missing fedgate-client-id or authorization metadata")
    return client_id, token


class FederationServicer(pb_grpc.FederationServicer):
    def __init__(self, federation: Federation, max_update_bytes: int) -> None:
        self.federation = federation
        self.max_update_bytes = max_update_bytes

    @mapped
    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinReply:
        ack = await self.federation.join(serde.join_request_from_proto(request, TRANSPORT))
        return serde.join_ack_to_proto(ack)

    @mapped
    async def NextTask(self, request: pb.NextTaskRequest, context: Any) -> pb.Task:
        client_id, token = credentials(context)
        task = await self.federation.next_task(client_id, token, request.wait_s)
        return serde.task_to_proto(task)

    async def FetchModel(
        self, request: pb.FetchModelRequest, context: Any
    ) -> AsyncIterator[pb.ModelChunk]:
        try:
            client_id, token = credentials(context)
            model = await self.federation.fetch_model(
                client_id, token, request.version, request.codec or None, request.have_ref
            )
        except FedgateError as error:
            await abort_with(context, error)
            return
        view = memoryview(model.payload)
        yield serde.model_header_to_proto(model, bytes(view[:CHUNK_BYTES]))
        for start in range(CHUNK_BYTES, len(view), CHUNK_BYTES):
            yield pb.ModelChunk(data=bytes(view[start : start + CHUNK_BYTES]))

    @mapped
    async def SubmitUpdate(
        self, request_iterator: AsyncIterator[pb.UpdateChunk], context: Any
    ) -> pb.UpdateReceipt:
        client_id, token = credentials(context)
        header, payload = await self._receive_update(request_iterator)
        update = serde.update_from_proto(header, payload)
        receipt = await self.federation.submit_update(client_id, token, update)
        return serde.receipt_to_proto(receipt)

    @mapped
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatReply:
        client_id, token = credentials(context)
        return serde.heartbeat_to_proto(await self.federation.heartbeat(client_id, token))

    @mapped
    async def Leave(self, request: pb.LeaveRequest, context: Any) -> pb.LeaveReply:
        client_id, token = credentials(context)
        await self.federation.leave(client_id, token)
        return pb.LeaveReply()

    async def _receive_update(
        self, chunks: AsyncIterator[pb.UpdateChunk]
    ) -> tuple[pb.UpdateHeader, bytes]:
        """Assemble an upload, refusing it as soon as it passes what it or the limit allow."""
        first = await anext(aiter(chunks), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidUpdate("an update upload must start with its header")
        header = first.header
        if header.total_size > self.max_update_bytes:
            raise PayloadTooLarge(
                f"update of {header.total_size} bytes exceeds the limit of {self.max_update_bytes}"
            )
        body = bytearray()
        async for chunk in chunks:
            body += chunk.data
            if len(body) > header.total_size:
                raise PayloadTooLarge(f"upload passed its declared {header.total_size} bytes")
        if len(body) != header.total_size:
            raise InvalidUpdate(f"upload ended after {len(body)} of {header.total_size} bytes")
        return header, bytes(body)


class OperatorServicer(pb_grpc.OperatorServicer):
    """Status for anyone holding the admin token; control too."""

    def __init__(self, federation: Federation, admin_token: str) -> None:
        self.federation = federation
        self.admin_token = admin_token

    def _authorise(self, context: Any) -> None:
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        token = str(metadata.get("authorization", "")).removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            raise Unauthorized("operator calls need the admin token")

    @mapped
    async def GetStatus(self, request: pb.StatusRequest, context: Any) -> pb.Status:
        self._authorise(context)
        return serde.status_to_proto(self.federation.status())

    async def WatchStatus(
        self, request: pb.StatusRequest, context: Any
    ) -> AsyncIterator[pb.Status]:
        try:
            self._authorise(context)
        except FedgateError as error:
            await abort_with(context, error)
            return
        async for status in self.federation.watch():
            yield serde.status_to_proto(status)

    @mapped
    async def Pause(self, request: pb.ControlRequest, context: Any) -> pb.Status:
        self._authorise(context)
        self.federation.pause()
        return serde.status_to_proto(self.federation.status())

    @mapped
    async def Resume(self, request: pb.ControlRequest, context: Any) -> pb.Status:
        self._authorise(context)
        self.federation.resume()
        return serde.status_to_proto(self.federation.status())

    @mapped
    async def Stop(self, request: pb.ControlRequest, context: Any) -> pb.Status:
        self._authorise(context)
        self.federation.stop()
        return serde.status_to_proto(self.federation.status())

    @mapped
    async def UpdateConfig(self, request: pb.ConfigChange, context: Any) -> pb.Status:
        self._authorise(context)
        self.federation.update_config(serde.config_change_from_proto(request))
        return serde.status_to_proto(self.federation.status())

    @mapped
    async def Kick(self, request: pb.KickRequest, context: Any) -> pb.Status:
        self._authorise(context)
        self.federation.kick(request.client_id, request.reason or "removed by operator")
        return serde.status_to_proto(self.federation.status())


async def start_grpc_server(
    federation: Federation,
    host: str,
    port: int,
    *,
    admin_token: str,
    max_update_bytes: int,
) -> tuple[grpc.aio.Server, int]:
    """Start serving on host:port (0 picks a free port); returns the server and its port."""
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    pb_grpc.add_FederationServicer_to_server(
        FederationServicer(federation, max_update_bytes), server
    )
    pb_grpc.add_OperatorServicer_to_server(OperatorServicer(federation, admin_token), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    log.info("gRPC listening on %s:%d", host, bound)
    return server, bound
