"""The server's side of the problem table: fedgate errors leave FastAPI as RFC 9457 bodies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fedgate import errors
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
