"""fedgate errors <-> HTTP statuses with RFC 9457 problem bodies: the adapter's one table.

The body carries the precise error ``code``, so the client raises the exception class the
federation raised; the status alone is enough for any other HTTP client. The server's side
(FastAPI exception handlers) is in `problem_handlers`, so the client imports no FastAPI.
"""

from __future__ import annotations

import json

import httpx

from fedgate import errors

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Most specific first: the first matching class decides the status.
STATUS_BY_ERROR: tuple[tuple[type[errors.FedgateError], int], ...] = (
    (errors.UnknownClient, 404),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.RateLimited, 429),
    (errors.Conflict, 409),
    (errors.UnknownCodec, 415),
    (errors.UnsupportedMediaType, 415),
    (errors.DecodedSizeExceeded, 413),
    (errors.PayloadTooLarge, 413),
    (errors.CodecError, 400),
    (errors.InvalidUpdate, 422),
    (errors.ConfigError, 400),
    (errors.BadRequest, 400),
    (errors.TransportError, 503),
    (errors.StoreError, 503),
    (errors.FedgateError, 500),
)
TRANSIENT_STATUSES = frozenset({502, 503, 504})
_ERROR_BY_STATUS: dict[int, type[errors.FedgateError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.UnknownClient,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnknownCodec,
    422: errors.InvalidUpdate,
    429: errors.RateLimited,
}


def status_for(error: errors.FedgateError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


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
    if status == 503:  # the server's own capacity limit (uvicorn's limit_concurrency)
        return errors.Overloaded(f"HTTP {status}: {text}")
    if status in TRANSIENT_STATUSES:
        return errors.TransportError(f"HTTP {status}: {text}")
    cls = _ERROR_BY_STATUS.get(status, errors.ServerError)
    return errors.error_from_code(cls.code, f"HTTP {status}: {text}")
