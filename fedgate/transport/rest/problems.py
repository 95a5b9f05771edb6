"""fedgate errors <-> HTTP statuses with RFC 9457 problem bodies: the adapter's one table.

The body carries the precise error ``code``, so the client raises the exception class the
federation raised; the status alone is enough for any other HTTP client.
"""

from __future__ import annotations

import json
import logging

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fedgate import errors

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("fedgate.rest")

# Most specific first: the first matching class decides the status.
STATUS_BY_ERROR: tuple[tuple[type[errors.FedgateError], int], ...] = (
    (errors.UnknownClient, 404),
    (errors.Unauthorized, 401),
    (errors.Conflict, 409),
    (errors.UnknownCodec, 415),
    (errors.DecodedSizeExceeded, 413),
    (errors.PayloadTooLarge, 413),
    (errors.CodecError, 400),
    (errors.InvalidUpdate, 422),
    (errors.ConfigError, 400),
    (errors.BadRequest, 400),
    (errors.TransportError, 503),
    (errors.FedgateError, 500),
)
TRANSIENT_STATUSES = frozenset({502, 503, 504})
_ERROR_BY_STATUS: dict[int, type[errors.FedgateError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Unauthorized,
    404: errors.UnknownClient,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnknownCodec,
    422: errors.InvalidUpdate,
}


def status_for(error: errors.FedgateError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


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


def error_from_response(response: httpx.Response) -> errors.FedgateError:
    """The fedgate error an HTTP error response stands for."""
    status = response.status_code
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return errors.error_from_code(body["code"], str(body.get("detail", "")))
    text = response.text[:200] or response.reason_phrase
    if status in TRANSIENT_STATUSES:
        return errors.TransportError(f"HTTP {status}: {text}")
    cls = _ERROR_BY_STATUS.get(status, errors.ServerError)
    return errors.error_from_code(cls.code, f"HTTP {status}: {text}")
