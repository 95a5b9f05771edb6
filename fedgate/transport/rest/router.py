"""REST routes for clients, mirroring the gRPC Federation service one to one.

Payloads travel as binary bodies in the codec's own media type, never base64 in JSON.
Client calls carry ``Authorization: Bearer <token>``; routes that are not under
``/clients/{client_id}`` also carry ``X-Fedgate-Client-Id``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from fedgate.codecs import CODECS, get_codec
from fedgate.core.enrolment import MAX_NUM_EXAMPLES
from fedgate.core.federation import MAX_POLL_S
from fedgate.core.messages import EncodedModel, JoinRequest, ModelWant, UpdateHeader
from fedgate.errors import BadRequest, PayloadTooLarge, Unauthorized, UnknownCodec
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts
from fedgate.transport.rest import schemas
from fedgate.transport.rest.access import EnrolmentKey, json_body_doc, parse_json, peer_host
from fedgate.transport.rest.context import Context, CurrentFederation
from fedgate.transport.rest.headers import (
    BASE_REF_HEADER,
    CLIENT_HEADER,
    CODEC_HEADER,
    MODEL_VERSION_HEADER,
    REF_HEADER,
    TASK_HEADER,
)
from fedgate.transport.slicing import SLICE_BYTES, joined, streamed

TRANSPORT = "rest"
log = logging.getLogger("fedgate.rest")
MAX_INT64 = 2**63 - 1


async def bearer(authorization: Annotated[str, Header()] = "") -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing 'Authorization: Bearer <token>' header")
    return token.strip()


async def header_client_id(x_fedgate_client_id: Annotated[str, Header()] = "") -> str:
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


def declared_length(request: Request) -> int | None:
    """The body size a request's Content-Length declares, if it declares one (ASCII
    digits only: ``"²".isdigit()`` is true and ``int`` refuses it)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isascii() and declared.isdecimal() else None


async def read_body(
    request: Request, limit: int, timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS
) -> bytes:
    """The request body (see `collect_body` for how it is bounded). The pieces are kept as
    they come and joined once, off the event loop (`joined`): no copy of the whole body is
    made on the loop."""
    parts: list[bytes] = []
    await collect_body(request, limit, parts.append, timeouts)
    return await joined(parts)


async def read_upload(
    request: Request, limit: int, timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS
) -> bytearray:
    """An update's body (bounded as `collect_body` says), copied once, piece by piece as
    it comes, into the one buffer the decoder then reads in place (the raw codec's
    tensors share it): one copy of a ResNet-50 upload, not a join and the decoder's own."""
    body = bytearray()
    await collect_body(request, limit, body.extend, timeouts)
    return body


async def collect_body(
    request: Request,
    limit: int,
    take: Callable[[bytes], object],
    timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS,
) -> None:
    """Hand each piece of the request body to ``take`` as it comes; refused as soon as it
    is known to pass ``limit`` bytes (never more is taken), or when it stalls for
    ``timeouts.idle_s`` or takes longer than ``timeouts.total_s`` in all."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    size = 0
    chunks = aiter(request.stream())
    try:
        async with asyncio.timeout(timeouts.total_s):
            while True:
                async with asyncio.timeout(timeouts.idle_s):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    return
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body passed the limit of {limit} bytes")
                if chunk:
                    take(chunk)
    except TimeoutError:
        raise BadRequest(
            f"upload too slow: refused after {size} bytes (idle limit "
            f"{timeouts.idle_s:g}s, whole upload {timeouts.total_s:g}s)"
        ) from None
    except ClientDisconnect:
        # A client killed or cut off mid-body: an everyday event, not a server fault. One
        # line says so; the caller abandons what the body was for (an upload's permit).
        log.warning(
            "%s %s from %s: the client disconnected after %d of %s body bytes; abandoned",
            *(
                request.method,
                request.url.path,
                peer_host(request),
                size,
                "?" if declared is None else declared,
            ),
        )
        raise BadRequest(f"client disconnected after {size} body bytes") from None


router = APIRouter(prefix="/api/v1", tags=["clients"])
MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {c.media_type: {} for c in CODECS.values()},
        "description": "The encoded model, in the codec's media type.",
    }
}
TASK_WITH_MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {c.media_type: {} for c in CODECS.values()},
        "description": "The task's model, as /models/{version} sends it; empty without one.",
        "headers": {
            TASK_HEADER: {
                "description": "The task, as the JSON /clients/{client_id}/task returns.",
                "schema": {"type": "string"},
            }
        },
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


JOIN_BODY_BYTES = 4096  # a name, a codec and a number


@router.post(
    "/clients",
    status_code=201,
    response_model=schemas.JoinReply,
    openapi_extra=json_body_doc(schemas.JoinBody),
)
async def join(
    request: Request, key: EnrolmentKey, federation: CurrentFederation
) -> schemas.JoinReply:
    """Join the federation with a codec; the reply's token authorises later calls.

    The client's enrolment key comes as ``Authorization: Bearer fgk_<key id>_<secret>``
    (unless the server runs with ``--enrolment open``), checked before the body is read:
    missing, wrong, expired or revoked is 401; ``num_examples`` above the key's limit
    403; a key with no room left 409; too many joins from one address or with one key
    429 (``code`` rate_limited)."""
    body = parse_json(await read_body(request, JOIN_BODY_BYTES), schemas.JoinBody)
    join = JoinRequest(
        body.name,
        body.codec,
        body.num_examples,
        transport=TRANSPORT,
        key=key,
        peer=peer_host(request),  # from the connection, never from the body
    )
    return schemas.join_ack_to_json(await federation.join(join))


@router.get("/clients/{client_id}/task", response_model=schemas.TaskJson)
async def next_task(
    client_id: PathClient,
    token: Token,
    federation: CurrentFederation,
    wait_s: Annotated[float, Query(ge=0, le=MAX_POLL_S)] = 10.0,
) -> schemas.TaskJson:
    """Long-poll for the next task: TRAIN, WAIT (ask again) or STOP (leave)."""
    return schemas.task_to_json(await federation.next_task(client_id, token, wait_s))


@router.get(
    "/clients/{client_id}/task-with-model",
    response_class=Response,
    responses=TASK_WITH_MODEL_RESPONSES,
)
async def next_task_with_model(
    *,
    client_id: PathClient,
    token: Token,
    federation: CurrentFederation,
    wait_s: Annotated[float, Query(ge=0, le=MAX_POLL_S)] = 10.0,
    codec: Annotated[str, Query(max_length=64)] = "",
    have: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Long-poll for the next task, as ``/task`` does, with a TRAIN task's model: a round
    costs one request down and one up.

    The task is the ``X-Fedgate-Task`` header (the JSON ``/task`` returns). The body is
    the model ``/models/{version}?codec=&have=`` would send, with its headers; it is empty
    for WAIT and STOP, and for a TRAIN task whose model the client must fetch itself."""
    task = await federation.next_task(client_id, token, wait_s, ModelWant(codec, have))
    headers = {TASK_HEADER: schemas.task_to_json(task).model_dump_json()}
    if task.model is None:
        return Response(headers=headers)
    return model_response(task.model, headers)


@router.get("/models/{version}", response_class=Response, responses=MODEL_RESPONSES)
async def fetch_model(
    *,
    version: Annotated[int, Path(ge=0, le=MAX_INT64)],
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
    return model_response(model)


def model_response(model: EncodedModel, headers: dict[str, str] | None = None) -> Response:
    """A model as the body, with `model_headers` (and ``headers``).

    A large one goes in slices of the cached payload: handed over whole, the socket
    transport would copy what the socket does not take at once into its buffer, on the
    event loop (nearly 100 MB for a ResNet-50), and the loop would be held for it."""
    all_headers = {**(headers or {}), **model_headers(model)}
    media_type = get_codec(model.codec).media_type
    payload = model.payload
    if len(payload) <= SLICE_BYTES:
        return Response(content=payload, media_type=media_type, headers=all_headers)
    all_headers["content-length"] = str(len(payload))  # not chunked: the size is known
    return StreamingResponse(streamed(payload), media_type=media_type, headers=all_headers)


def model_headers(model: EncodedModel) -> dict[str, str]:
    """What a model body is: its version, codec, reference and (for a delta) base."""
    headers = {
        MODEL_VERSION_HEADER: str(model.version),
        CODEC_HEADER: model.codec,
        REF_HEADER: model.ref,
    }
    if model.base_ref:
        headers[BASE_REF_HEADER] = model.base_ref
    return headers


@router.post(
    "/rounds/{round_id}/updates",
    status_code=201,
    response_model=schemas.ReceiptJson,
    openapi_extra=UPDATE_BODY,
)
async def submit_update(
    *,
    request: Request,
    round_id: Annotated[str, Path(max_length=64)],
    client_id: HeaderClient,
    token: Token,
    context: Context,
    model_version: Annotated[int, Query(ge=0, le=MAX_INT64)],
    num_examples: Annotated[int, Query(ge=1, le=MAX_NUM_EXAMPLES)],
    codec: Annotated[str | None, Query(max_length=64)] = None,
    train_loss: Annotated[float | None, Query()] = None,
    base_ref: Annotated[str, Query(max_length=64)] = "",
) -> schemas.ReceiptJson:
    """An update for a round, as a binary body in its codec's media type: trained
    weights, or with ``?base_ref=REF`` their difference to the model held as REF.

    Everything but the body (client, token, round, selection, version, weight, codec and
    declared size) is checked before a byte of the body is read."""
    header = UpdateHeader(
        round_id=round_id,
        model_version=model_version,
        num_examples=num_examples,
        codec=codec_for_media_type(request.headers.get("content-type", ""), codec),
        train_loss=_nan(train_loss),
        base_ref=base_ref,
    )
    federation = context.federation
    permit = await federation.begin_update(client_id, token, header, declared_length(request))
    try:
        limit = min(permit.max_bytes, context.max_update_bytes)
        payload = await read_upload(request, limit, context.upload_timeouts)
    except BaseException:
        federation.abandon_update(permit)
        raise
    return schemas.receipt_to_json(await federation.finish_update(permit, payload))


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
