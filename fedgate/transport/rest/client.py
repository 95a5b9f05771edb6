"""The client side of the REST adapter: a `Transport` over one aiohttp session
(`http_session`)."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import math
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fedgate.core.messages import (
    EncodedModel,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    Task,
    Update,
    UpdateReceipt,
)
from fedgate.core.transport import Session
from fedgate.errors import ConfigError, ServerError, UnknownCodec
from fedgate.transport.rest import schemas
from fedgate.transport.rest.headers import (
    BASE_REF_HEADER,
    CLIENT_HEADER,
    CODEC_HEADER,
    MODEL_VERSION_HEADER,
    REF_HEADER,
    TASK_HEADER,
)
from fedgate.transport.rest.http_session import Answer, HttpSession
from fedgate.transport.rest.problems import PROBLEM_MEDIA_TYPE, error_from_response
from fedgate.transport.slicing import streamed
from fedgate.transport.tls import ClientTls, load_client_tls

Reply = TypeVar("Reply", bound=BaseModel)
CALL_TIMEOUT_S = 30.0
OCTET_STREAM = "application/octet-stream"
TRANSFER_TIMEOUT_S = 900.0


def dropped_connection_hint(base_url: str, tls: ClientTls | None) -> str:
    """What a connection the server drops without a response most likely means."""
    if base_url.startswith("http://"):
        return "if the server uses TLS, connect to its https:// URL with --tls-ca"
    if tls is None or tls.cert is None:
        return (
            "a server that requires a client certificate (mutual TLS) drops connections "
            "without one: pass --tls-cert and --tls-key"
        )
    return ""


class RestTransport:
    name = "rest"

    def __init__(self, base_url: str, *, tls: ClientTls | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        if tls is not None and not self.base_url.startswith("https://"):
            raise ConfigError(f"TLS options given for {base_url}: use an https:// URL")
        # tls None: plain http, or an https:// URL checked against the system's CAs
        context = load_client_tls(tls).context if tls else None
        self._model_on_task = True  # False once the server has no task-with-model route
        self._api = f"{self.base_url}/api/v1"
        self._http = HttpSession(context, dropped_connection_hint(self.base_url, tls))

    async def join(self, request: JoinRequest) -> JoinAck:
        body = {"name": request.name, "codec": request.codec, "num_examples": request.num_examples}
        # the enrolment key travels as a bearer credential, not in the body
        headers = {"Authorization": f"Bearer {request.key}"} if request.key else {}
        reply = await self._json("POST", "/clients", schemas.JoinReply, json=body, headers=headers)
        return schemas.join_ack_from_json(reply)

    async def next_task(self, session: Session, wait_s: float) -> Task:
        reply = await self._json(
            "GET",
            f"/clients/{session.client_id}/task",
            schemas.TaskJson,
            session=session,
            params={"wait_s": wait_s},
            limit_s=wait_s + CALL_TIMEOUT_S,
        )
        return schemas.task_from_json(reply)

    async def next_task_with_model(self, session: Session, wait_s: float, want: ModelWant) -> Task:
        """The next task, a TRAIN task with its model (one request); from a server older
        than the route, the task alone (the client then fetches the model)."""
        if self._model_on_task:
            params = {"wait_s": wait_s, "codec": want.codec, "have": want.have_ref}
            response = await self._send(
                "GET",
                f"/clients/{session.client_id}/task-with-model",
                session=session,
                params={name: value for name, value in params.items() if value != ""},
                limit_s=wait_s + TRANSFER_TIMEOUT_S,
                missing_ok=True,
            )
            if not route_missing(response):
                return task_with_model(response)
            self._model_on_task = False  # asked once: the next tasks come the old way
        return await self.next_task(session, wait_s)

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        params = {"codec": codec, **({"have": have_ref} if have_ref else {})}
        response = await self._send(
            "GET",
            f"/models/{version}",
            session=session,
            limit_s=TRANSFER_TIMEOUT_S,
            headers={"Accept": _media_type(codec)},
            params=params,
        )
        return model_of(response, version, codec)

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt:
        params: dict[str, Any] = {
            "model_version": update.model_version,
            "num_examples": update.num_examples,
        }
        media_type = _media_type(update.codec)
        if media_type == OCTET_STREAM:
            params["codec"] = update.codec  # unknown here: let the server judge the name
        if update.base_ref:
            params["base_ref"] = update.base_ref
        if math.isfinite(update.train_loss):
            params["train_loss"] = update.train_loss
        reply = await self._json(
            "POST",
            f"/rounds/{update.round_id}/updates",
            schemas.ReceiptJson,
            session=session,
            params=params,
            content=streamed(update.payload),
            limit_s=TRANSFER_TIMEOUT_S,
            # the size up front (not chunked): the server checks it before the body
            headers={"Content-Type": media_type, "Content-Length": str(len(update.payload))},
        )
        return schemas.receipt_from_json(reply)

    async def heartbeat(self, session: Session) -> HeartbeatAck:
        path = f"/clients/{session.client_id}/heartbeat"
        reply = await self._json("POST", path, schemas.HeartbeatJson, session=session)
        return schemas.heartbeat_from_json(reply)

    async def leave(self, session: Session) -> None:
        await self._send("DELETE", f"/clients/{session.client_id}", session=session)

    async def close(self) -> None:
        await self._http.close()

    async def _json(self, method: str, path: str, reply: type[Reply], **kwargs: Any) -> Reply:
        """The response's JSON body as ``reply``; one it is not is the server's fault."""
        response = await self._send(method, path, **kwargs)
        with _unexpected_reply():
            return reply.model_validate_json(response.content)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        session: Session | None = None,
        headers: dict[str, str] | None = None,
        limit_s: float = CALL_TIMEOUT_S,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> Answer:
        """The response; an error status raises its fedgate error, unless ``missing_ok``
        and the route is missing (`route_missing`: the response is returned)."""
        all_headers = dict(headers or {})
        if session is not None:
            all_headers["Authorization"] = f"Bearer {session.token}"
            all_headers[CLIENT_HEADER] = session.client_id
        response = await self._exchange(method, path, all_headers, limit_s, **kwargs)
        if response.status_code >= 400 and not (missing_ok and route_missing(response)):
            raise error_from_response(response)
        return response

    async def _exchange(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        limit_s: float,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | AsyncIterator[bytes | memoryview] | None = None,
    ) -> Answer:
        """One request and its whole answer."""
        url = self._api + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        if json is not None:
            content = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":")).encode()
            headers = {**headers, "Content-Type": "application/json"}
        return await self._http.request(method, url, headers, limit_s, content)


def route_missing(response: Answer) -> bool:
    """A route the server does not have (an older fedgate): a 404 or 405 that is not one
    of fedgate's own problems (an unknown client is a 404 too, with a problem body)."""
    content_type = response.headers.get("content-type", "")
    return response.status_code in (404, 405) and not content_type.startswith(PROBLEM_MEDIA_TYPE)


def task_with_model(response: Answer) -> Task:
    """The task in a task-with-model response, with the model its body carries, if any."""
    with _unexpected_reply():
        body = schemas.TaskJson.model_validate_json(response.headers.get(TASK_HEADER, ""))
    task = schemas.task_from_json(body)
    if MODEL_VERSION_HEADER not in response.headers:
        return task
    return dataclasses.replace(task, model=model_of(response, task.model_version, ""))


def model_of(response: Answer, version: int, codec: str) -> EncodedModel:
    """The model a response's body and headers carry (version and codec: if unsaid)."""
    with _unexpected_reply():
        return EncodedModel(
            version=int(response.headers.get(MODEL_VERSION_HEADER, version)),
            codec=response.headers.get(CODEC_HEADER, codec),
            payload=response.content,
            ref=response.headers.get(REF_HEADER, ""),
            base_ref=response.headers.get(BASE_REF_HEADER, ""),
        )


@contextmanager
def _unexpected_reply() -> Iterator[None]:
    """A reply the client cannot read (its JSON, its headers) is the server's fault (a
    ServerError)."""
    try:
        yield
    except (ValidationError, ValueError) as error:
        raise ServerError(f"the server sent an unexpected reply: {error}") from None


def _media_type(codec: str) -> str:
    # imported here: a client process joins (no codec needed) before it imports torch,
    # which the codecs need; by its first model the codecs are loaded
    from fedgate.codecs import get_codec  # noqa: PLC0415 - see the comment above

    try:
        return get_codec(codec).media_type
    except UnknownCodec:
        return OCTET_STREAM
