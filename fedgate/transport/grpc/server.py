"""The gRPC server: thin servicers that map protobuf calls onto one Federation.

Large payloads stream in chunks both ways, so no message ever approaches gRPC's limits;
the limits are still set explicitly, never left at the 4 MB default.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import grpc

from fedgate.core.accounts import Principal, Role, audit
from fedgate.core.service import FederationService
from fedgate.errors import FedgateError, InvalidUpdate, Unauthorized
from fedgate.transport.connection_limits import ConnectionLimits, grpc_server_options
from fedgate.transport.grpc import access, admin_serde, serde, streams, uploads
from fedgate.transport.grpc.channel import CHANNEL_OPTIONS
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.grpc.status import ERROR_CODE_KEY, status_for
from fedgate.transport.grpc.work_calls import WorkCalls
from fedgate.transport.internal import internal_error
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts
from fedgate.transport.servers import Extensions, ServerSettings, host_port
from fedgate.transport.tls import ServerTls
from fedgate.transport.watch import status_stream

log = logging.getLogger("fedgate.grpc")

TRANSPORT = "grpc"

R = TypeVar("R")
Handler = Callable[..., Awaitable[R]]


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: FedgateError) -> None:
    await context.abort(
        status_for(error), error.message, trailing_metadata=((ERROR_CODE_KEY, error.code),)
    )


def as_fedgate_error(error: Exception, where: str) -> FedgateError:
    """``error`` itself if it is fedgate's, else an internal error that shows only an id."""
    return error if isinstance(error, FedgateError) else internal_error(error, where)


def mapped(handler: Handler[R]) -> Handler[R]:
    """Translate every error a unary handler raises into a gRPC status (never UNKNOWN)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the edge: nothing unplanned leaves as it is
            await abort_with(context, as_fedgate_error(error, handler.__qualname__))
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
    def __init__(
        self,
        federation: FederationService,
        max_update_bytes: int,
        timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS,
    ) -> None:
        self.federation = federation
        self.max_update_bytes = max_update_bytes
        self.timeouts = timeouts
        self.work = WorkCalls(federation, max_update_bytes, timeouts)

    @mapped
    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinReply:
        # the enrolment key from metadata, the peer from the connection: never from the body
        join = serde.join_request_from_proto(
            request, TRANSPORT, key=access.bearer(context), peer=access.peer_host(context)
        )
        ack = await self.federation.join(join)
        return serde.join_ack_to_proto(ack)

    @mapped
    async def NextTask(self, request: pb.NextTaskRequest, context: Any) -> pb.Task:
        client_id, token = credentials(context)
        task = await self.federation.next_task(client_id, token, request.wait_s)
        return serde.task_to_proto(task)

    async def NextTaskWithModel(  # type: ignore[override]  # a model's bytes go as slices
        self, request: pb.NextTaskWithModelRequest, context: Any
    ) -> AsyncIterator[streams.TaskItem]:
        """NextTask, and a TRAIN task's model streamed after it (see the proto)."""
        try:
            client_id, token = credentials(context)
            want = serde.model_want_from_proto(request)
            task = await self.federation.next_task(client_id, token, request.wait_s, want)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the edge: nothing unplanned leaves as it is
            await abort_with(context, as_fedgate_error(error, "NextTaskWithModel"))
            return
        for part in streams.task_parts(task):
            yield part

    async def FetchModel(  # type: ignore[override]  # a model's bytes go as slices
        self, request: pb.FetchModelRequest, context: Any
    ) -> AsyncIterator[streams.ModelPart]:
        try:
            client_id, token = credentials(context)
            model = await self.federation.fetch_model(
                client_id, token, request.version, request.codec or None, request.have_ref
            )
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the edge: nothing unplanned leaves as it is
            await abort_with(context, as_fedgate_error(error, "FetchModel"))
            return
        for chunk in streams.model_chunks(model):
            yield chunk

    @mapped
    async def SubmitUpdate(
        self, request_iterator: AsyncIterator[streams.UpdateData], context: Any
    ) -> pb.UpdateReceipt:
        """Credentials are checked before anything is read, the header before the body."""
        client = credentials(context)
        self.federation.authenticate(*client)
        chunks = aiter(request_iterator)
        async with asyncio.timeout(self.timeouts.idle_s):
            first = await anext(chunks, None)
        if first is None or isinstance(first, memoryview) or first.WhichOneof("part") != "header":
            raise InvalidUpdate("an update upload must start with its header")
        declared = first.header.total_size

        def body(limit: int) -> Awaitable[bytearray]:
            return uploads.receive_body(
                chunks, update_data, declared, limit, self.timeouts, to_end=True
            )

        receipt = await uploads.receive_update(
            self.federation, client, first.header, self.max_update_bytes, body
        )
        return serde.receipt_to_proto(receipt)

    async def Work(  # type: ignore[override]  # answers by context.write, returns nothing
        self, request_iterator: AsyncIterator[streams.WorkUpItem], context: Any
    ) -> None:
        """A client's asks and updates on one call (see `fedgate.transport.grpc.work_calls`)."""
        try:
            client = credentials(context)
            self.federation.authenticate(*client)
            await self.work.serve(client, aiter(request_iterator), context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the edge: nothing unplanned leaves as it is
            await abort_with(context, as_fedgate_error(error, "Work"))

    @mapped
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatReply:
        client_id, token = credentials(context)
        return serde.heartbeat_to_proto(await self.federation.heartbeat(client_id, token))

    @mapped
    async def Leave(self, request: pb.LeaveRequest, context: Any) -> pb.LeaveReply:
        client_id, token = credentials(context)
        await self.federation.leave(client_id, token)
        return pb.LeaveReply()


def update_data(chunk: streams.UpdateData) -> bytes | memoryview:
    """A SubmitUpdate chunk's bytes (a message that is not data: refused)."""
    if isinstance(chunk, memoryview):
        return chunk
    if chunk.WhichOneof("part") != "data":
        raise InvalidUpdate("an update carries one header, then only data")
    return chunk.data


class OperatorServicer(pb_grpc.OperatorServicer):
    """Status for viewers, control for operators, keys and users for admins (roles nest,
    see `fedgate.core.accounts.Role`). Every call but Login checks the caller's role from
    its metadata before it uses the request."""

    def __init__(self, federation: FederationService, admin_token: str) -> None:
        self.federation = federation
        self.admin_token = admin_token

    def _allow(self, context: Any, role: Role) -> Principal:
        return access.authorise(self.federation, context, role, self.admin_token)

    def _status(self) -> pb.Status:
        return serde.status_to_proto(self.federation.status())

    @mapped
    async def GetStatus(self, request: pb.StatusRequest, context: Any) -> pb.Status:
        self._allow(context, Role.VIEWER)
        return self._status()

    async def WatchStatus(
        self, request: pb.StatusRequest, context: Any
    ) -> AsyncIterator[pb.Status]:
        try:
            self._allow(context, Role.VIEWER)
        except Exception as error:  # the edge: nothing unplanned leaves as it is
            await abort_with(context, as_fedgate_error(error, "WatchStatus"))
            return
        # ends with the run, or at once when the server stops (`fedgate.transport.watch`);
        # a cancelled call is grpc's to log (at DEBUG), not a failure of the handler
        async for status in status_stream(self.federation):
            yield serde.status_to_proto(status)

    @mapped
    async def Pause(self, request: pb.ControlRequest, context: Any) -> pb.Status:
        audit(self._allow(context, Role.OPERATOR), "paused the run")
        self.federation.pause()
        return self._status()

    @mapped
    async def Resume(self, request: pb.ControlRequest, context: Any) -> pb.Status:
        audit(self._allow(context, Role.OPERATOR), "resumed the run")
        self.federation.resume()
        return self._status()

    @mapped
    async def Stop(self, request: pb.ControlRequest, context: Any) -> pb.Status:
        audit(self._allow(context, Role.OPERATOR), "stopped the run")
        self.federation.stop()
        return self._status()

    @mapped
    async def UpdateConfig(self, request: pb.ConfigChange, context: Any) -> pb.Status:
        principal = self._allow(context, Role.OPERATOR)
        changes = serde.config_change_from_proto(request)
        self.federation.update_config(changes)
        audit(principal, f"changed the config: {changes}")
        return self._status()

    @mapped
    async def Kick(self, request: pb.KickRequest, context: Any) -> pb.Status:
        principal = self._allow(context, Role.OPERATOR)
        self.federation.kick(request.client_id, request.reason or "removed by operator")
        audit(principal, f"kicked client {request.client_id}")
        return self._status()

    @mapped
    async def CreateKey(self, request: pb.CreateKeyRequest, context: Any) -> pb.CreatedKey:
        principal = self._allow(context, Role.ADMIN)
        expires = request.expires_in_s if request.HasField("expires_in_s") else None
        issued = self.federation.enrolment.create(
            request.name, request.max_clients, request.max_num_examples, expires
        )
        audit(principal, f"created enrolment key {issued.key.key_id} ({issued.key.name})")
        return admin_serde.issued_key_to_proto(issued)

    @mapped
    async def ListKeys(self, request: pb.ListKeysRequest, context: Any) -> pb.KeyList:
        self._allow(context, Role.ADMIN)
        keys = self.federation.enrolment.list()
        return pb.KeyList(keys=[admin_serde.key_to_proto(k) for k in keys])

    @mapped
    async def RevokeKey(self, request: pb.RevokeKeyRequest, context: Any) -> pb.EnrolmentKey:
        principal = self._allow(context, Role.ADMIN)
        key = self.federation.revoke_key(request.key_id)
        audit(principal, f"revoked enrolment key {key.key_id} ({key.name})")
        return admin_serde.key_to_proto(key)

    @mapped
    async def Login(self, request: pb.LoginRequest, context: Any) -> pb.LoginReply:
        result = await self.federation.accounts.login(
            request.name, request.password, access.peer_host(context)
        )
        return admin_serde.login_to_proto(result)

    @mapped
    async def Logout(self, request: pb.LogoutRequest, context: Any) -> pb.LogoutReply:
        self.federation.accounts.logout(access.bearer(context))
        return pb.LogoutReply()

    @mapped
    async def AddUser(self, request: pb.AddUserRequest, context: Any) -> pb.User:
        principal = self._allow(context, Role.ADMIN)
        user = await self.federation.accounts.add_user(request.name, request.password, request.role)
        audit(principal, f"added user {user.name} ({user.role.value})")
        return admin_serde.user_to_proto(user)

    @mapped
    async def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.UserList:
        self._allow(context, Role.ADMIN)
        users = self.federation.accounts.list_users()
        return pb.UserList(users=[admin_serde.user_to_proto(u) for u in users])

    @mapped
    async def RemoveUser(self, request: pb.RemoveUserRequest, context: Any) -> pb.RemoveUserReply:
        principal = self._allow(context, Role.ADMIN)
        self.federation.accounts.remove_user(request.name)
        audit(principal, f"removed user {request.name}")
        return pb.RemoveUserReply()


class Serving(NamedTuple):
    server: grpc.aio.Server
    port: int
    work: WorkCalls  # the Work calls open on it


async def start_grpc_server(
    federation: FederationService,
    host: str,
    port: int,
    *,
    admin_token: str,
    max_update_bytes: int,
    tls: ServerTls | None = None,
    limits: ConnectionLimits | None = None,
    upload_timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS,
    extensions: Extensions | None = None,
) -> Serving:
    """Start serving on host:port (0 picks a free port).

    With ``tls`` the port speaks only TLS (mutual TLS when it names a client CA); ``limits``
    bound connections (handshake time, idle and age, streams, metadata, pings)."""
    limits = limits or ConnectionLimits()
    extensions = extensions or Extensions()
    server = grpc.aio.server(
        options=[*CHANNEL_OPTIONS, *grpc_server_options(limits)],
        maximum_concurrent_rpcs=limits.grpc_max_concurrent_rpcs,
        interceptors=extensions.grpc_interceptors,
    )
    for extend in extensions.grpc:
        extend(server)
    servicer = FederationServicer(federation, max_update_bytes, upload_timeouts)
    streams.add_federation_servicer(servicer, server)
    pb_grpc.add_OperatorServicer_to_server(OperatorServicer(federation, admin_token), server)
    address = host_port(host, port)
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key_pem, tls.cert_pem)],
            root_certificates=tls.client_ca_pem,
            require_client_auth=tls.client_ca_pem is not None,
        )
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    await server.start()
    log.info("gRPC listening on %s%s", host_port(host, bound), " (TLS)" if tls else "")
    return Serving(server, bound, servicer.work)


class GrpcServerAdapter:
    """The `ServerAdapter` for gRPC: both services on one port; the address is ``host:port``."""

    name = TRANSPORT

    def __init__(self) -> None:
        self._serving: Serving | None = None

    async def start(self, service: FederationService, settings: ServerSettings) -> str:
        self._serving = await start_grpc_server(
            service,
            settings.host,
            settings.port,
            admin_token=settings.admin_token,
            max_update_bytes=settings.max_update_bytes,
            tls=settings.tls,
            limits=settings.limits,
            upload_timeouts=settings.upload_timeouts,
            extensions=settings.extensions,
        )
        return host_port(settings.host, self._serving.port)

    async def stop(self, grace_s: float) -> None:
        """Stop serving: calls in progress get ``grace_s``; Work calls waiting for their
        client's next step end at once (their clients wait for the server's return)."""
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.work.end_waiting()
            await serving.server.stop(grace_s)
