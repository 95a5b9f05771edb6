"""REST routes for operators, mirroring the gRPC Operator service: status, watch, control.

Status and watch need a viewer, the controls an operator (roles nest; see
`fedgate.transport.rest.access`): ``Authorization: Bearer <token>`` with a session token
from login or the server's admin token, or the session cookie. No credential is 401, a
role that does not allow the route 403, both decided before any body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from fedgate.core.accounts import audit
from fedgate.core.service import FederationService
from fedgate.transport.rest import schemas
from fedgate.transport.rest.access import (
    MAX_JSON_BYTES,
    Operator,
    Viewer,
    json_body_doc,
    parse_json,
)
from fedgate.transport.rest.context import CurrentFederation
from fedgate.transport.rest.router import read_body
from fedgate.transport.watch import status_stream

router = APIRouter(prefix="/api/v1", tags=["operator"])
log = logging.getLogger("fedgate.rest")


def status_of(federation: FederationService) -> schemas.StatusJson:
    return schemas.status_to_json(federation.status())


@router.get("/status", response_model=schemas.StatusJson)
async def get_status(viewer: Viewer, federation: CurrentFederation) -> schemas.StatusJson:
    """The run: state, round, config, clients, history, bytes per transport and codec."""
    return status_of(federation)


@router.get("/status/watch", response_class=StreamingResponse)
async def watch_status(viewer: Viewer, federation: CurrentFederation) -> StreamingResponse:
    """Server-sent events: one ``status`` event per change, until the run ends."""

    async def events() -> AsyncIterator[str]:
        async for snapshot in status_stream(federation):
            body = schemas.status_to_json(snapshot).model_dump_json()
            yield f"event: status\ndata: {body}\n\n"

    return EventStream(events(), media_type="text/event-stream")


class EventStream(StreamingResponse):
    """A stream that ends in good order when the server cancels it.

    A stopping server ends status streams first (`fedgate.transport.watch`); one it
    cancels all the same, at the end of its grace period, closes its body and returns
    instead of leaving uvicorn a CancelledError to log as an application error: the
    cancellation has done its job, the request task ends."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await super().__call__(scope, receive, tracking_send)
        except asyncio.CancelledError:
            log.info("%s: stream cancelled (the server is stopping)", scope.get("path"))
            with contextlib.suppress(Exception):  # the peer may be gone already
                if not started:
                    await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.post("/run/pause", response_model=schemas.StatusJson)
async def pause(operator: Operator, federation: CurrentFederation) -> schemas.StatusJson:
    """Open no new round until resumed; the open round runs to its end."""
    federation.pause()
    audit(operator, "paused the run")
    return status_of(federation)


@router.post("/run/resume", response_model=schemas.StatusJson)
async def resume(operator: Operator, federation: CurrentFederation) -> schemas.StatusJson:
    federation.resume()
    audit(operator, "resumed the run")
    return status_of(federation)


@router.post("/run/stop", response_model=schemas.StatusJson)
async def stop(operator: Operator, federation: CurrentFederation) -> schemas.StatusJson:
    """End the run now; an open round is abandoned."""
    federation.stop()
    audit(operator, "stopped the run")
    return status_of(federation)


@router.patch(
    "/run/config",
    response_model=schemas.StatusJson,
    openapi_extra=json_body_doc(schemas.ConfigChangeBody),
)
async def update_config(
    request: Request, operator: Operator, federation: CurrentFederation
) -> schemas.StatusJson:
    """Change rounds, clients per round, deadline, learning rate... from the next round."""
    body = parse_json(await read_body(request, MAX_JSON_BYTES), schemas.ConfigChangeBody)
    changes = body.model_dump(exclude_none=True)
    federation.update_config(changes)
    audit(operator, f"changed the config: {changes}")
    return status_of(federation)


@router.post(
    "/clients/{client_id}/kick",
    response_model=schemas.StatusJson,
    openapi_extra=json_body_doc(schemas.KickBody, required=False),
)
async def kick(
    client_id: Annotated[str, Path(max_length=64)],
    request: Request,
    operator: Operator,
    federation: CurrentFederation,
) -> schemas.StatusJson:
    """Remove a client; it is dropped from an open round and must join again."""
    raw = await read_body(request, MAX_JSON_BYTES)
    body = parse_json(raw, schemas.KickBody, optional=True)
    federation.kick(client_id, body.reason)
    audit(operator, f"kicked client {client_id}")
    return status_of(federation)
