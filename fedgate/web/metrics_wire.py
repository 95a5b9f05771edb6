"""Metrics taken at the two edges: an ASGI middleware for REST requests and a gRPC
server interceptor for calls. Both hand bounded label values to a callback
(`fedgate.web.metrics.GatewayMetrics`): what a caller controls (the path, the method,
the gRPC method name) never becomes a label as it was sent, so nobody can make the
server keep one series per value they invent.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

import grpc
import grpc.aio
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"  # a request no route answers (its path is not a label)
UNKNOWN_METHOD = "unknown"  # a gRPC method the server does not have
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class RequestObserver(Protocol):
    def __call__(self, route: str, method: str, status: int, seconds: float) -> None: ...


class CallObserver(Protocol):
    def __call__(self, method: str, code: str, seconds: float | None) -> None: ...


# ---- REST ---------------------------------------------------------------------------------


class RequestMetrics:
    """Times each HTTP request to its response's headers (a stream's length is not its
    latency) and reports it by route template, method and status; a request that fails
    before answering counts as a 500."""

    def __init__(self, app: ASGIApp, observe: RequestObserver) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root = str(scope.get("root_path", ""))  # mounts on the way add to it
        answered = False

        async def timed_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                self._record(scope, root, int(message["status"]), started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if not answered:
                self._record(scope, root, 500, started)
            raise

    def _record(self, scope: Scope, root: str, status: int, started: float) -> None:
        method = str(scope.get("method", ""))
        method = method if method in HTTP_METHODS else "OTHER"
        seconds = time.perf_counter() - started
        self.observe(route_template(scope, root), method, status, seconds)


def route_template(scope: Scope, root: str = "") -> str:
    """The path template of the route that answered (``/api/v1/clients/{client_id}/task``),
    as the router left it in the scope it routed: its own path behind the mounts it sits
    in; a mount that answered itself (static files) as ``PREFIX/{path}``; ``unmatched``
    when nothing answered."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    mounts = str(scope.get("root_path", ""))[len(root) :]  # a mount's own path included
    if isinstance(path, str) and not isinstance(route, Mount):
        return mounts + path
    if "endpoint" in scope:  # routed to a mounted app that has no routes of its own
        return f"{mounts}/{{path}}"
    return UNMATCHED


# ---- gRPC ---------------------------------------------------------------------------------


class GrpcCallMetrics(grpc.aio.ServerInterceptor):
    """Counts every call by its method (only methods the server has) and status code,
    and times it (a streaming call: the whole stream)."""

    def __init__(self, observe: CallObserver) -> None:
        self.observe = observe

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # grpc answers UNIMPLEMENTED; the made-up name is not kept
            self.observe(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED.name, None)
            return handler
        return _timed_handler(handler, str(handler_call_details.method), self.observe)


def _timed_handler(
    handler: grpc.RpcMethodHandler[Req, Resp], method: str, observe: CallObserver
) -> grpc.RpcMethodHandler[Req, Resp]:
    """``handler`` with its behaviour wrapped to report the call's code and duration."""
    kinds = {
        (False, False): (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (False, True): (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (True, False): (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (True, True): (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    }
    found, make = kinds[(handler.request_streaming, handler.response_streaming)]
    behaviour = cast(Callable[..., Any], found)
    wrapped = (
        _timed_generator(behaviour, method, observe)
        if inspect.isasyncgenfunction(behaviour)
        else _timed_coroutine(behaviour, method, observe)
    )
    return make(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _timed_coroutine(
    behaviour: Callable[..., Awaitable[Any]], method: str, observe: CallObserver
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started, error = time.perf_counter(), None
        try:
            return await behaviour(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            observe(method, status_code(context, error), time.perf_counter() - started)

    return call


def _timed_generator(
    behaviour: Callable[..., AsyncIterator[Any]], method: str, observe: CallObserver
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started, error = time.perf_counter(), None
        try:
            async for response in behaviour(request, context):
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            observe(method, status_code(context, error), time.perf_counter() - started)

    return call


def status_code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The code the call ends with: the one the servicer set or aborted with; else OK
    for a return, CANCELLED for a cancelled call, UNKNOWN for an escaped exception (grpc
    answers those so)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return grpc.StatusCode.OK.name
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name
