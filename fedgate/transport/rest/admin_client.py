"""A blocking client of the REST operator API (status and its stream, keys, users, login),
for `fedgate keys`, `fedgate users` and the launcher. It raises fedgate's errors only,
like the client transports, and imports no server code."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from fedgate.core.accounts import LoginResult, Role, UserView
from fedgate.core.enrolment import IssuedKey, KeyView
from fedgate.core.messages import FederationStatus
from fedgate.errors import ConfigError, ServerError, TransportError
from fedgate.transport.rest import admin_schemas as schemas
from fedgate.transport.rest.problems import error_from_response
from fedgate.transport.rest.schemas import StatusJson, status_from_json
from fedgate.transport.tls import ClientTls, load_client_tls

CALL_TIMEOUT_S = 30.0
M = TypeVar("M", bound=BaseModel)


class AdminClient:
    def __init__(self, server: str, token: str = "", *, tls: ClientTls | None = None) -> None:
        base_url = (server if "://" in server else f"http://{server}").rstrip("/")
        if tls is not None and not base_url.startswith("https://"):
            raise ConfigError(f"TLS options given for {server}: use an https:// URL")
        verify: ssl.SSLContext | bool = load_client_tls(tls).context if tls else True
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=f"{base_url}/api/v1",
            headers=headers,
            timeout=CALL_TIMEOUT_S,
            verify=verify,
        )

    def create_key(
        self,
        name: str,
        max_clients: int,
        max_num_examples: int,
        expires_in_s: float | None = None,
    ) -> IssuedKey:
        body = {
            "name": name,
            "max_clients": max_clients,
            "max_num_examples": max_num_examples,
            "expires_in_s": expires_in_s,
        }
        reply = self._call("POST", "/keys", schemas.CreatedKeyJson, json=body)
        return schemas.issued_key_from_json(reply)

    def list_keys(self) -> list[KeyView]:
        reply = self._call("GET", "/keys", schemas.KeyListJson)
        return [schemas.key_from_json(k) for k in reply.keys]

    def revoke_key(self, key_id: str) -> KeyView:
        return schemas.key_from_json(self._call("DELETE", f"/keys/{key_id}", schemas.KeyJson))

    def login(self, name: str, password: str) -> LoginResult:
        body = {"name": name, "password": password}
        return schemas.login_from_json(self._call("POST", "/login", schemas.LoginJson, json=body))

    def add_user(self, name: str, password: str, role: Role) -> UserView:
        body = {"name": name, "password": password, "role": role.value}
        return schemas.user_from_json(self._call("POST", "/users", schemas.UserJson, json=body))

    def list_users(self) -> list[UserView]:
        reply = self._call("GET", "/users", schemas.UserListJson)
        return [schemas.user_from_json(u) for u in reply.users]

    def remove_user(self, name: str) -> None:
        self._send("DELETE", f"/users/{name}")

    def status_document(self) -> dict[str, Any]:
        """The operator status as the server sent it (JSON), for callers that keep it."""
        document: dict[str, Any] = json.loads(self._send("GET", "/status").content)
        return document

    def watch_status(self) -> Iterator[FederationStatus]:
        """The status stream (server-sent events) until the run ends or the server goes."""
        timeout = httpx.Timeout(CALL_TIMEOUT_S, read=None)  # quiet between changes
        try:
            with self._http.stream("GET", "/status/watch", timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        body = StatusJson.model_validate_json(line.removeprefix("data: "))
                        yield status_from_json(body)
        except httpx.HTTPError:
            return  # the server went away: whoever started it learns the rest from its exit

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        response = self._send(method, path, **kwargs)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as error:
            raise ServerError(f"the server sent an unexpected body: {error}") from None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise TransportError(f"HTTP request failed: {type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response
