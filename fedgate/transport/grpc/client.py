"""The client side of the gRPC adapter: a `Transport` over a grpc.aio channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc

from fedgate.core.messages import (
    EncodedModel,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    Task,
    Update,
    UpdateReceipt,
)
from fedgate.core.transport import Session
from fedgate.errors import FedgateError, Overloaded, TlsError, TransportError
from fedgate.transport.grpc import serde, streams
from fedgate.transport.grpc.call_status import ServerStatus
from fedgate.transport.grpc.channel import CHANNEL_OPTIONS, CHUNK_BYTES
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.grpc.status import ERROR_CODE_KEY, error_from_rpc
from fedgate.transport.grpc.work import WorkStream
from fedgate.transport.slicing import slices
from fedgate.transport.tls import ClientTls, load_client_tls, looks_like_tls_failure

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0
TRANSFER_TIMEOUT_S = 900.0  # a ResNet-50 in JSON is half a gigabyte
# grpc's own reconnect backoff grows to 120 s: a channel whose server was gone for a few
# minutes (a restart) could refuse every call for up to two more once it is back. The
# client loop backs off by itself; the channel only has to keep up with it.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def session_metadata(session: Session) -> tuple[tuple[str, str], ...]:
    return (("fedgate-client-id", session.client_id), ("authorization", f"Bearer {session.token}"))


@asynccontextmanager
async def translated_errors(target: str = "", tls: bool = False) -> AsyncIterator[None]:
    """No grpc exception escapes: each becomes the fedgate error it stands for."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        raise connection_failure(error, target, tls) or error_from_rpc(error) from None
    except (grpc.aio.UsageError, grpc.aio.InternalError, OSError) as error:
        raise TransportError(f"gRPC channel failed: {error}") from None


def connection_failure(error: grpc.aio.AioRpcError, target: str, tls: bool) -> FedgateError | None:
    """A failure of the connection, not of the call, told as such (None: not one of those):
    TLS handshakes that fail, connections the server closes, calls over its limit.

    Only what the TLS library itself reports is a TlsError; a connection the server just
    closes (as it does, after the handshake, to a client without the certificate mutual
    TLS requires) stays a TransportError, with the likely reason in its message."""
    details = error.details() or ""
    said, code = details.lower(), error.code()
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrent rpc limit" in said:
        # grpc's own refusal, without a fedgate code: the server's call limit, not a size
        return Overloaded(f"the server is at its limit of concurrent calls ({details})")
    if code is not grpc.StatusCode.UNAVAILABLE or "failed to connect" not in said:
        return None  # only the connection phase: a call cut later is not a handshake failure
    if tls and looks_like_tls_failure(details):
        return TlsError(
            f"TLS handshake with {target} failed: check that --tls-ca names the CA that "
            "signed the server's certificate, that the certificate names the host, and that "
            f"the server speaks TLS ({details})"
        )
    if "socket closed" in said:
        hint = (
            "a server that requires a client certificate (mutual TLS) closes connections "
            "without one: pass --tls-cert and --tls-key"
            if tls
            else "if the server uses TLS, connect with --tls-ca"
        )
        return TransportError(
            f"gRPC connection to {target} closed by the server; {hint} ({details})"
        )
    return None


def unimplemented(error: grpc.aio.AioRpcError) -> bool:
    """A call the server does not have (an older fedgate), not a fedgate refusal."""
    codes = [value for key, value in error.trailing_metadata() or () if key == ERROR_CODE_KEY]
    return error.code() is grpc.StatusCode.UNIMPLEMENTED and not codes


def cut_off(error: grpc.aio.AioRpcError) -> bool:
    """A call ended by its connection, not by fedgate (whose refusals all carry their
    code): a server that stopped or went away resets its calls (HTTP/2 RST_STREAM or
    GOAWAY), which grpc reports as INTERNAL or CANCELLED. For a single call that is rare;
    a long-lived call meets it whenever its server restarts."""
    codes = [value for key, value in error.trailing_metadata() or () if key == ERROR_CODE_KEY]
    cut = (grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED)
    return error.code() in cut and not codes


def method_path(name: str) -> str:
    """The path of a Federation call, from the proto (``/fedgate.v1.Federation/<name>``)."""
    descriptor = pb.DESCRIPTOR.services_by_name["Federation"]
    return f"/{descriptor.full_name}/{descriptor.methods_by_name[name].name}"


def open_channel(target: str, tls: ClientTls | None) -> grpc.aio.Channel:
    options = [*CHANNEL_OPTIONS, *RECONNECT_OPTIONS]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    material = load_client_tls(tls)  # ConfigError naming the file, before any connection
    credentials = grpc.ssl_channel_credentials(
        root_certificates=material.ca_pem,
        private_key=material.key_pem,
        certificate_chain=material.cert_pem,
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


class WorkUnavailable(Exception):
    """The server has no Work call (an older fedgate): the single calls it is then."""


class GrpcTransport:
    name = "grpc"

    def __init__(
        self, target: str, *, chunk_bytes: int = CHUNK_BYTES, tls: ClientTls | None = None
    ) -> None:
        self.target = target
        self.chunk_bytes = chunk_bytes
        self.tls = tls  # None: plain text
        self._channel = open_channel(target, tls)
        self._stub: Any = pb_grpc.FederationStub(self._channel)
        # the calls that carry models and updates, with the chunk (de)serialisers
        self._fetch_model = self._channel.unary_stream(
            method_path("FetchModel"),
            request_serializer=pb.FetchModelRequest.SerializeToString,
            response_deserializer=streams.model_chunk_from_wire,
        )
        self._task_with_model = self._channel.unary_stream(
            method_path("NextTaskWithModel"),
            request_serializer=pb.NextTaskWithModelRequest.SerializeToString,
            response_deserializer=streams.task_part_from_wire,
        )
        self._submit_update = self._channel.stream_unary(
            method_path("SubmitUpdate"),
            request_serializer=streams.update_chunk_to_wire,
            response_deserializer=pb.UpdateReceipt.FromString,
        )
        self._work_call = self._channel.stream_stream(
            method_path("Work"),
            request_serializer=streams.work_up_to_wire,
            response_deserializer=streams.work_down_from_wire,
        )
        self._model_on_task = True  # False once the server turns NextTaskWithModel away
        self._on_work = True  # False once the server turns Work away (an older fedgate)
        self._work: WorkStream | None = None
        self._work_lock = asyncio.Lock()  # one step at a time on the Work call

    async def join(self, request: JoinRequest) -> JoinAck:
        # the enrolment key travels as a bearer credential in metadata, not in the message
        metadata = (("authorization", f"Bearer {request.key}"),) if request.key else ()
        reply = await self._call(
            lambda: self._stub.Join(
                serde.join_request_to_proto(request), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        )
        return serde.join_ack_from_proto(reply)

    async def next_task(self, session: Session, wait_s: float) -> Task:
        reply = await self._call(
            lambda: self._stub.NextTask(
                pb.NextTaskRequest(wait_s=wait_s),
                metadata=session_metadata(session),
                timeout=wait_s + CALL_TIMEOUT_S,
            )
        )
        return serde.task_from_proto(reply)

    async def next_task_with_model(self, session: Session, wait_s: float, want: ModelWant) -> Task:
        """The next task, a TRAIN task with its model: on the Work call; from a server older
        than Work, with NextTaskWithModel; from one older than that, the task alone (the
        client then fetches the model)."""
        if self._on_work:
            try:
                return await self._step(
                    session, lambda work: work.next_task(want, wait_s), wait_s + TRANSFER_TIMEOUT_S
                )
            except WorkUnavailable:
                self._on_work = False
        if self._model_on_task:
            async with translated_errors(self.target, self.tls is not None):
                call = self._task_with_model(
                    serde.model_want_to_proto(want, wait_s),
                    metadata=session_metadata(session),
                    timeout=wait_s + TRANSFER_TIMEOUT_S,
                )
                try:
                    return await streams.task_from_parts(call)
                except grpc.aio.AioRpcError as error:
                    if not unimplemented(error):
                        raise
            self._model_on_task = False  # asked once: the next tasks come the old way
        return await self.next_task(session, wait_s)

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        request = pb.FetchModelRequest(version=version, codec=codec, have_ref=have_ref)
        async with translated_errors(self.target, self.tls is not None):
            call = self._fetch_model(
                request, metadata=session_metadata(session), timeout=TRANSFER_TIMEOUT_S
            )
            return await streams.model_from_chunks(call)

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt:
        if self._on_work:
            try:
                return await self._step(
                    session, lambda work: work.submit(update, self.chunk_bytes), TRANSFER_TIMEOUT_S
                )
            except WorkUnavailable:
                self._on_work = False
        async with translated_errors(self.target, self.tls is not None):
            call = self._submit_update(
                self._update_chunks(update),
                metadata=session_metadata(session),
                timeout=TRANSFER_TIMEOUT_S,
            )
            status = ServerStatus(call)  # a refusal at the header races the body's chunks
            try:
                reply = await call
            except grpc.aio.AioRpcError as error:
                raise status.server_error(error) from None
        return serde.receipt_from_proto(reply)

    async def heartbeat(self, session: Session) -> HeartbeatAck:
        reply = await self._call(
            lambda: self._stub.Heartbeat(
                pb.HeartbeatRequest(),
                metadata=session_metadata(session),
                timeout=CALL_TIMEOUT_S,
            )
        )
        return serde.heartbeat_from_proto(reply)

    async def leave(self, session: Session) -> None:
        await self._call(
            lambda: self._stub.Leave(
                pb.LeaveRequest(), metadata=session_metadata(session), timeout=CALL_TIMEOUT_S
            )
        )

    async def close(self) -> None:
        work, self._work = self._work, None
        if work is not None:
            await work.close()
        await self._channel.close()

    async def _step(
        self, session: Session, step: Callable[[WorkStream], Awaitable[T]], timeout_s: float
    ) -> T:
        """``step`` on the session's Work call (opened first if there is none, or renewed);
        a call that fails is dropped, and the next step opens another."""
        async with self._work_lock, translated_errors(self.target, self.tls is not None):
            work = await self._work_for(session)
            try:
                async with asyncio.timeout(timeout_s):
                    return await step(work)
            except BaseException as error:
                self._work = None
                work.drop()
                if isinstance(error, grpc.aio.AioRpcError) and unimplemented(error):
                    raise WorkUnavailable from None
                if isinstance(error, grpc.aio.AioRpcError) and cut_off(error):
                    raise TransportError(
                        f"the Work call was cut off (gRPC {error.code().name}: {error.details()})"
                    ) from None
                if isinstance(error, TimeoutError):
                    raise TransportError(
                        f"no answer on the Work call in {timeout_s:.0f} s"
                    ) from None
                raise

    async def _work_for(self, session: Session) -> WorkStream:
        work = self._work
        if work is not None and work.call.done():  # ended between steps: the server went
            work = None
        if work is not None and (work.token != session.token or work.worn):
            await work.close()  # between steps: nothing is lost
            work = None
        if work is None:
            call = self._work_call(metadata=session_metadata(session))
            self._work = work = WorkStream(call, session.token)
        return work

    async def _update_chunks(self, update: Update) -> AsyncIterator[streams.UpdateItem]:
        yield pb.UpdateChunk(header=serde.update_header_to_proto(update))
        for piece in slices(update.payload, self.chunk_bytes):
            yield piece

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        async with translated_errors(self.target, self.tls is not None):
            return await call()
