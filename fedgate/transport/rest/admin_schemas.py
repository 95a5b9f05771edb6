"""JSON bodies of the REST admin API (enrolment keys, users, login), paired with the core's
views like `schemas`: ``x_to_json`` builds a body from a core value, ``x_from_json`` the
reverse. The bounds here repeat the core's checks so that OpenAPI tells them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedgate.core.accounts import MAX_PASSWORD, LoginResult, Principal, Role, UserView
from fedgate.core.enrolment import (
    MAX_EXPIRY_S,
    MAX_KEY_CLIENTS,
    MAX_KEY_NAME,
    MAX_NUM_EXAMPLES,
    IssuedKey,
    KeyState,
    KeyView,
)
from fedgate.transport.rest.schemas import Body

RoleName = Literal["viewer", "operator", "admin"]  # a Literal keeps the schema inline
KeyStateName = Literal["active", "expired", "revoked"]


class KeyCreateBody(Body):
    name: str = Field(min_length=1, max_length=MAX_KEY_NAME)
    max_clients: int = Field(ge=1, le=MAX_KEY_CLIENTS)
    max_num_examples: int = Field(ge=1, le=MAX_NUM_EXAMPLES)
    expires_in_s: float | None = Field(default=None, gt=0, le=MAX_EXPIRY_S)


class KeyJson(Body):
    key_id: str
    name: str
    max_clients: int
    max_num_examples: int
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    state: KeyStateName
    clients: int


class CreatedKeyJson(Body):
    key: KeyJson
    secret: str = Field(description="fgk_<key id>_<secret>; shown this once")


class KeyListJson(Body):
    keys: list[KeyJson]


class LoginBody(Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class LoginJson(Body):
    token: str = Field(description="send as 'Authorization: Bearer <token>'")
    name: str
    role: RoleName
    expires_in_s: float


class UserAddBody(Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=MAX_PASSWORD)
    role: RoleName


class UserJson(Body):
    name: str
    role: RoleName
    created_at: float


class UserListJson(Body):
    users: list[UserJson]


def key_to_json(key: KeyView) -> KeyJson:
    return KeyJson(**{**vars(key), "state": key.state.value})


def key_from_json(body: KeyJson) -> KeyView:
    return KeyView(**{**body.model_dump(), "state": KeyState(body.state)})


def issued_key_to_json(issued: IssuedKey) -> CreatedKeyJson:
    return CreatedKeyJson(key=key_to_json(issued.key), secret=issued.secret)


def issued_key_from_json(body: CreatedKeyJson) -> IssuedKey:
    return IssuedKey(key_from_json(body.key), body.secret)


def user_to_json(user: UserView) -> UserJson:
    return UserJson(name=user.name, role=user.role.value, created_at=user.created_at)


def user_from_json(body: UserJson) -> UserView:
    return UserView(body.name, Role(body.role), body.created_at)


def login_to_json(result: LoginResult) -> LoginJson:
    return LoginJson(
        token=result.token,
        name=result.principal.name,
        role=result.principal.role.value,
        expires_in_s=result.expires_in_s,
    )


def login_from_json(body: LoginJson) -> LoginResult:
    return LoginResult(body.token, Principal(body.name, Role(body.role)), body.expires_in_s)
