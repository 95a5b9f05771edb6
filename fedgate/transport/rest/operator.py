"""REST routes for operators, mirroring the gRPC Operator service: status, watch, control.

Every route needs ``Authorization: Bearer <admin token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse

from fedgate.core.federation import Federation
from fedgate.errors import Unauthorized
from fedgate.transport.rest import schemas
from fedgate.transport.rest.context import Context, CurrentFederation


def authorise(context: Context, authorization: Annotated[str, Header()] = "") -> None:
    token = authorization.removeprefix("Bearer ").strip()
    if not hmac.compare_digest(token.encode(), context.admin_token.encode()):
        raise Unauthorized("operator routes need 'Authorization: Bearer <admin token>'")


router = APIRouter(prefix="/api/v1", tags=["operator"], dependencies=[Depends(authorise)])


def status_of(federation: Federation) -> schemas.StatusJson:
    return schemas.status_to_json(federation.status())


@router.get("/status", response_model=schemas.StatusJson)
async def get_status(federation: CurrentFederation) -> schemas.StatusJson:
    """The run: state, round, config, clients, history, bytes per transport and codec."""
    return status_of(federation)


@router.get("/status/watch", response_class=StreamingResponse)
async def watch_status(federation: CurrentFederation) -> StreamingResponse:
    """Server-sent events: one ``status`` event per change, until the run ends."""

    async def events() -> AsyncIterator[str]:
        async for snapshot in federation.watch():
            body = schemas.status_to_json(snapshot).model_dump_json()
            yield f"event: status\ndata: {body}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/run/pause", response_model=schemas.StatusJson)
async def pause(federation: CurrentFederation) -> schemas.StatusJson:
    """Open no new round until resumed; the open round runs to its end."""
    federation.pause()
    return status_of(federation)


@router.post("/run/resume", response_model=schemas.StatusJson)
async def resume(federation: CurrentFederation) -> schemas.StatusJson:
    federation.resume()
    return status_of(federation)


@router.post("/run/stop", response_model=schemas.StatusJson)
async def stop(federation: CurrentFederation) -> schemas.StatusJson:
    """End the run now; an open round is abandoned."""
    federation.stop()
    return status_of(federation)


@router.patch("/run/config", response_model=schemas.StatusJson)
async def update_config(
    body: schemas.ConfigChangeBody, federation: CurrentFederation
) -> schemas.StatusJson:
    """Change rounds, clients per round, deadline, learning rate... from the next round."""
    federation.update_config(body.model_dump(exclude_none=True))
    return status_of(federation)


@router.post("/clients/{client_id}/kick", response_model=schemas.StatusJson)
async def kick(
    client_id: str, federation: CurrentFederation, body: schemas.KickBody | None = None
) -> schemas.StatusJson:
    """Remove a client; it is dropped from an open round and must join again."""
    federation.kick(client_id, body.reason if body else "removed by operator")
    return status_of(federation)
