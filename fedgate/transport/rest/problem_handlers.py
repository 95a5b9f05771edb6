"""The server's side of the problem table: fedgate errors leave FastAPI as RFC 9457 bodies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedgate import errors
from fedgate.transport.internal import internal_error
from fedgate.transport.rest.problems import PROBLEM_MEDIA_TYPE, status_for


def problem_response(error: errors.FedgateError) -> JSONResponse:
    status = status_for(error)
    body = {
        "type": f"https://fedgate.dev/problems/{error.code}",
        "title": type(error).__name__,
        "status": status,
        "detail": error.message,
        "code": error.code,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def install_problem_handlers(app: FastAPI) -> None:
    """Every fedgate error, and FastAPI's own validation errors, leave as problems."""

    async def on_fedgate_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, errors.FedgateError)
        return problem_response(error)

    async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        detail = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in error.errors()
        )
        return problem_response(errors.BadRequest(f"invalid request: {detail}"))

    app.add_exception_handler(errors.FedgateError, on_fedgate_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_middleware(InternalErrorMiddleware)


class InternalErrorMiddleware:
    """Any other exception leaves as a 500 problem that shows only an error id.

    Starlette's own fallback would send a bare 500 and print the traceback on the
    console; here the traceback goes to the log under the id the caller is given. An
    exception after the response started can only end the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:  # the edge: nothing unplanned leaves as it is
            failure = internal_error(error, f"{scope.get('method')} {scope.get('path')}")
            if not started:
                await problem_response(failure)(scope, receive, send)
