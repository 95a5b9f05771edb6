"""Who is calling the REST API, decided from headers before any body is read.

Operator routes take their caller as a dependency (`Viewer`, `Operator`, `Admin`): the
credential is ``Authorization: Bearer <token>`` (a session token from ``POST
/api/v1/login`` or the server's admin token) or, for the dashboard, the session cookie
login sets. None is 401, a role that does not allow the route 403. The join route takes
the enrolment key the same way (`EnrolmentKey`). Routes that read a JSON body declare no
pydantic body parameter (FastAPI would read and parse it before any dependency runs);
they read it with `parse_json` after their caller is known, and document it with
`json_body_doc`.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from fedgate.core.accounts import Principal, Role
from fedgate.errors import BadRequest
from fedgate.transport.rest.context import current_context, current_federation

SESSION_COOKIE = "fedgate_session"
MAX_JSON_BYTES = 64 * 1024  # operator and admin bodies are a few hundred bytes

B = TypeVar("B", bound=BaseModel)

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="A session token from POST /api/v1/login, or the server's admin token.",
)
_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The session cookie POST /api/v1/login sets (for the dashboard).",
)
_key_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="enrolmentKey",
    description="The client's enrolment key, fgk_<key id>_<secret>.",
)


async def credential(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> str:
    """The caller's token: the bearer header's, else the session cookie's, else ""."""
    return bearer.credentials.strip() if bearer else (cookie or "")


Credential = Annotated[str, Depends(credential)]


def require(role: Role) -> Any:
    """A dependency: the caller, if their role allows ``role``; else 401 or 403."""

    async def caller(request: Request, token: Credential) -> Principal:
        context = current_context(request)
        accounts = context.federation.accounts
        return accounts.authorise(token, role, bootstrap=context.admin_token)

    caller.__name__ = f"require_{role.value}"
    return Depends(caller)


Viewer = Annotated[Principal, require(Role.VIEWER)]
Operator = Annotated[Principal, require(Role.OPERATOR)]
Admin = Annotated[Principal, require(Role.ADMIN)]


async def enrolment_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_key_bearer)],
) -> str:
    """The join's enrolment key, checked (present where required, valid if given)."""
    key = bearer.credentials.strip() if bearer else ""
    current_federation(request).enrolment.check(key)
    return key


EnrolmentKey = Annotated[str, Depends(enrolment_key)]


def peer_host(request: Request) -> str:
    """The caller's address, from the connection (what join and login limits count)."""
    return request.client.host if request.client else ""


def parse_json(raw: bytes, model: type[B], *, optional: bool = False) -> B:
    """``raw`` as a ``model``; an empty body is the model's defaults when ``optional``."""
    try:
        if optional and not raw.strip():
            return model()
        return model.model_validate_json(raw)
    except ValidationError as error:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
            for item in error.errors()
        )
        raise BadRequest(f"invalid request body: {detail}") from None


def json_body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI for a JSON body a route reads itself (see the module's docstring)."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }
