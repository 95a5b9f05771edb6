"""fedgate errors <-> HTTP statuses with RFC 9457 problem bodies: the HTTP column of
`fedgate.transport.errors_table`.

The body carries the precise error ``code``, so the client raises the exception class the
federation raised; the status alone is enough for any other HTTP client. The server's side
(FastAPI exception handlers) is in `problem_handlers`, so the client imports no FastAPI.
"""

from __future__ import annotations

import json
from typing import Protocol

from fedgate import errors
from fedgate.transport import errors_table

PROBLEM_MEDIA_TYPE = "application/problem+json"

# What uvicorn's own concurrency limit (`limit_concurrency`) answers, before any fedgate
# code runs: no problem body, so only its exact words tell it from another 503's (a
# proxy's, whose server may well be down). The gRPC client's counterpart is grpc's own
# "concurrent rpc limit" refusal (`fedgate.transport.grpc.client.connection_failure`).
SERVER_LIMIT_REFUSAL = (503, b"Service Unavailable")


def status_for(error: errors.FedgateError) -> int:
    """The HTTP status ``error`` leaves a server with: its row's."""
    return errors_table.row_for(error).http


class HttpAnswer(Protocol):
    """What an error response is read by: httpx's ``Response`` is one, and so is the REST
    client's `fedgate.transport.rest.http_session.Answer`."""

    @property
    def status_code(self) -> int: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def content(self) -> bytes | bytearray: ...
    @property
    def text(self) -> str: ...


def error_from_response(response: HttpAnswer) -> errors.FedgateError:
    """The fedgate error an HTTP error response stands for: the one its problem body
    names, else the one its status stands for alone (the table's fallbacks)."""
    status = response.status_code
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return errors.error_from_code(body["code"], str(body.get("detail", "")))
    text = response.text[:200] or response.reason_phrase
    if (status, response.content) == SERVER_LIMIT_REFUSAL:
        return errors.Overloaded(f"HTTP {status}: {text}")
    cls = errors_table.error_for_http(status)
    return errors.error_from_code(cls.code, f"HTTP {status}: {text}")
