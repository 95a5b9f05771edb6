"""REST routes for admins and for logging in, mirroring the gRPC Operator service's
CreateKey, ListKeys, RevokeKey, Login, Logout, AddUser, ListUsers and RemoveUser.

Key and user routes need an admin (``Authorization: Bearer <token>`` with an admin's
session token or the server's admin token, or an admin's session cookie); login needs no
credential and answers with a token and a session cookie (HttpOnly, SameSite=Strict).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from fedgate.core.accounts import audit
from fedgate.transport.rest import admin_schemas as schemas
from fedgate.transport.rest.access import (
    MAX_JSON_BYTES,
    SESSION_COOKIE,
    Admin,
    Credential,
    json_body_doc,
    parse_json,
    peer_host,
)
from fedgate.transport.rest.context import CurrentFederation
from fedgate.transport.rest.router import read_body

router = APIRouter(prefix="/api/v1")
KeyId = Annotated[str, Path(max_length=64)]
UserName = Annotated[str, Path(max_length=64)]


@router.post(
    "/keys",
    status_code=201,
    response_model=schemas.CreatedKeyJson,
    tags=["keys"],
    openapi_extra=json_body_doc(schemas.KeyCreateBody),
)
async def create_key(
    request: Request, admin: Admin, federation: CurrentFederation
) -> schemas.CreatedKeyJson:
    """Create an enrolment key. The reply's ``secret`` is shown this once: give it to the
    owners of the clients the key is for (``fedgate client --key``)."""
    body = parse_json(await read_body(request, MAX_JSON_BYTES), schemas.KeyCreateBody)
    issued = federation.enrolment.create(
        body.name, body.max_clients, body.max_num_examples, body.expires_in_s
    )
    audit(admin, f"created enrolment key {issued.key.key_id} ({issued.key.name})")
    return schemas.issued_key_to_json(issued)


@router.get("/keys", response_model=schemas.KeyListJson, tags=["keys"])
async def list_keys(admin: Admin, federation: CurrentFederation) -> schemas.KeyListJson:
    """Every key with its limits, state and active clients; never a secret."""
    return schemas.KeyListJson(keys=[schemas.key_to_json(k) for k in federation.enrolment.list()])


@router.delete("/keys/{key_id}", response_model=schemas.KeyJson, tags=["keys"])
async def revoke_key(key_id: KeyId, admin: Admin, federation: CurrentFederation) -> schemas.KeyJson:
    """Revoke a key: nobody joins with it again, and its clients leave the run now."""
    key = federation.revoke_key(key_id)
    audit(admin, f"revoked enrolment key {key.key_id} ({key.name})")
    return schemas.key_to_json(key)


@router.post(
    "/login",
    response_model=schemas.LoginJson,
    tags=["accounts"],
    openapi_extra=json_body_doc(schemas.LoginBody),
)
async def login(
    request: Request, response: Response, federation: CurrentFederation
) -> schemas.LoginJson:
    """A session token for the API, and the same as a cookie for the dashboard."""
    body = parse_json(await read_body(request, MAX_JSON_BYTES), schemas.LoginBody)
    result = await federation.accounts.login(body.name, body.password, peer_host(request))
    response.set_cookie(
        SESSION_COOKIE,
        result.token,
        max_age=int(result.expires_in_s),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return schemas.login_to_json(result)


@router.post("/logout", status_code=204, response_class=Response, tags=["accounts"])
async def logout(token: Credential, federation: CurrentFederation) -> Response:
    """End the session the call's token or cookie stands for, and clear the cookie."""
    federation.accounts.logout(token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/users", response_model=schemas.UserListJson, tags=["accounts"])
async def list_users(admin: Admin, federation: CurrentFederation) -> schemas.UserListJson:
    users = federation.accounts.list_users()
    return schemas.UserListJson(users=[schemas.user_to_json(u) for u in users])


@router.post(
    "/users",
    status_code=201,
    response_model=schemas.UserJson,
    tags=["accounts"],
    openapi_extra=json_body_doc(schemas.UserAddBody),
)
async def add_user(
    request: Request, admin: Admin, federation: CurrentFederation
) -> schemas.UserJson:
    """Add a person with a role: viewer (reads), operator (also steers the run) or admin
    (also manages keys and users)."""
    body = parse_json(await read_body(request, MAX_JSON_BYTES), schemas.UserAddBody)
    user = await federation.accounts.add_user(body.name, body.password, body.role)
    audit(admin, f"added user {user.name} ({user.role.value})")
    return schemas.user_to_json(user)


@router.delete("/users/{name}", status_code=204, response_class=Response, tags=["accounts"])
async def remove_user(name: UserName, admin: Admin, federation: CurrentFederation) -> Response:
    """Remove a user; their sessions end at once."""
    federation.accounts.remove_user(name)
    audit(admin, f"removed user {name}")
    return Response(status_code=204)
