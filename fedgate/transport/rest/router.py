"""REST routes for clients, mirroring the gRPC Federation service one to one.

Payloads travel as binary bodies in the codec's own media type, never base64 in JSON.
Client calls carry ``Authorization: Bearer <token>``; routes that are not under
``/clients/{client_id}`` also carry ``X-Fedgate-Client-Id``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from fedgate.codecs import CODECS, get_codec
from fedgate.core.federation import MAX_POLL_S
from fedgate.core.messages import JoinRequest, Update
from fedgate.errors import PayloadTooLarge, Unauthorized, UnknownCodec
from fedgate.transport.rest import schemas
from fedgate.transport.rest.context import Context, CurrentFederation
from fedgate.transport.rest.headers import (
    BASE_REF_HEADER,
    CLIENT_HEADER,
    CODEC_HEADER,
    MODEL_VERSION_HEADER,
    REF_HEADER,
)

TRANSPORT = "rest"


def bearer(authorization: Annotated[str, Header()] = "") -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing 'Authorization: Bearer <token>' header")
    return token.strip()


def header_client_id(x_fedgate_client_id: Annotated[str, Header()] = "") -> str:
    if not x_fedgate_client_id:
        raise Unauthorized(f"missing {CLIENT_HEADER} header")
    return x_fedgate_client_id


Token = Annotated[str, Depends(bearer)]
HeaderClient = Annotated[str, Depends(header_client_id)]
PathClient = Annotated[str, Path(max_length=64)]


def codec_for_media_type(content_type: str, explicit: str | None) -> str:
    """The codec an upload is in: ``?codec=`` if given, else its Content-Type."""
    if explicit:
        return get_codec(explicit).name
    media_type = content_type.partition(";")[0].strip().lower()
    for codec in CODECS.values():
        if codec.media_type == media_type:
            return codec.name
    raise UnknownCodec(f"media type {media_type or '(none)'}", list(CODECS))


def codec_for_accept(accept: str, explicit: str | None) -> str | None:
    """The codec a download is wanted in: ``?codec=``, else Accept; None: the client's own."""
    if explicit:
        return get_codec(explicit).name
    wanted = [part.partition(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if not wanted or any(w in ("*/*", "application/*") for w in wanted):
        return None
    for media_type in wanted:
        for codec in CODECS.values():
            if codec.media_type == media_type:
                return codec.name
    raise UnknownCodec(f"Accept: {accept}", list(CODECS))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body passed the limit of {limit} bytes")
    return bytes(body)


router = APIRouter(prefix="/api/v1", tags=["clients"])
MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {c.media_type: {} for c in CODECS.values()},
        "description": "The encoded model, in the codec's media type.",
    }
}
UPDATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            c.media_type: {"schema": {"type": "string", "format": "binary"}}
            for c in CODECS.values()
        },
    }
}


@router.post("/clients", status_code=201, response_model=schemas.JoinReply)
async def join(body: schemas.JoinBody, federation: CurrentFederation) -> schemas.JoinReply:
    """Join the federation with a codec; the reply's token authorises later calls."""
    request = JoinRequest(body.name, body.codec, body.num_examples, transport=TRANSPORT)
    return schemas.join_ack_to_json(await federation.join(request))


@router.get("/clients/{client_id}/task", response_model=schemas.TaskJson)
async def next_task(
    client_id: PathClient,
    token: Token,
    federation: CurrentFederation,
    wait_s: Annotated[float, Query(ge=0, le=MAX_POLL_S)] = 10.0,
) -> schemas.TaskJson:
    """Long-poll for the next task: TRAIN, WAIT (ask again) or STOP (leave)."""
    return schemas.task_to_json(await federation.next_task(client_id, token, wait_s))


@router.get("/models/{version}", response_class=Response, responses=MODEL_RESPONSES)
async def fetch_model(
    *,
    version: int,
    client_id: HeaderClient,
    token: Token,
    federation: CurrentFederation,
    codec: Annotated[str | None, Query()] = None,
    have: Annotated[str, Query(max_length=64)] = "",
    accept: Annotated[str, Header()] = "*/*",
) -> Response:
    """A global model version, encoded in ``?codec=``, the Accept type, or the client's.

    With ``?have=REF`` (the ``X-Fedgate-Model-Ref`` of a model the client holds) the
    body may be a delta to that model: ``X-Fedgate-Base-Ref`` then names it.
    """
    chosen = codec_for_accept(accept, codec)
    model = await federation.fetch_model(client_id, token, version, chosen, have)
    headers = {
        MODEL_VERSION_HEADER: str(model.version),
        CODEC_HEADER: model.codec,
        REF_HEADER: model.ref,
    }
    if model.base_ref:
        headers[BASE_REF_HEADER] = model.base_ref
    return Response(
        content=model.payload, media_type=get_codec(model.codec).media_type, headers=headers
    )


@router.post(
    "/rounds/{round_id}/updates",
    status_code=201,
    response_model=schemas.ReceiptJson,
    openapi_extra=UPDATE_BODY,
)
async def submit_update(
    *,
    request: Request,
    round_id: str,
    client_id: HeaderClient,
    token: Token,
    context: Context,
    model_version: Annotated[int, Query(ge=0)],
    num_examples: Annotated[int, Query(ge=0)],
    codec: Annotated[str | None, Query()] = None,
    train_loss: Annotated[float | None, Query()] = None,
    train_accuracy: Annotated[float | None, Query()] = None,
    base_ref: Annotated[str, Query(max_length=64)] = "",
) -> schemas.ReceiptJson:
    """An update for a round, as a binary body in its codec's media type: trained
    weights, or with ``?base_ref=REF`` their difference to the model held as REF."""
    name = codec_for_media_type(request.headers.get("content-type", ""), codec)
    payload = await read_body(request, context.max_update_bytes)
    update = Update(
        round_id=round_id,
        model_version=model_version,
        num_examples=num_examples,
        codec=name,
        payload=payload,
        train_loss=_nan(train_loss),
        train_accuracy=_nan(train_accuracy),
        base_ref=base_ref,
    )
    receipt = await context.federation.submit_update(client_id, token, update)
    return schemas.receipt_to_json(receipt)


@router.post("/clients/{client_id}/heartbeat", response_model=schemas.HeartbeatJson)
async def heartbeat(
    client_id: PathClient, token: Token, federation: CurrentFederation
) -> schemas.HeartbeatJson:
    """A sign of life; a client that stops sending them is marked failed."""
    return schemas.heartbeat_to_json(await federation.heartbeat(client_id, token))


@router.delete("/clients/{client_id}", status_code=204, response_class=Response)
async def leave(client_id: PathClient, token: Token, federation: CurrentFederation) -> Response:
    """Leave the federation; an open round goes on without this client."""
    await federation.leave(client_id, token)
    return Response(status_code=204)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
