"""Who is calling, from a gRPC call's metadata and connection: the Operator service's role
checks and the Join's enrolment key and peer address, all read before the request is used.
"""

from __future__ import annotations

from typing import Any

from fedgate.core.accounts import Principal, Role
from fedgate.core.service import FederationService

AUTHORIZATION = "authorization"


def bearer(context: Any) -> str:
    """The token of the call's ``authorization: Bearer <token>`` metadata, or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def peer_host(context: Any) -> str:
    """The caller's address without its port: ``ipv4:10.0.0.5:52344`` -> ``10.0.0.5``,
    ``ipv6:[::1]:52344`` -> ``::1``; what join limits count per peer."""
    peer = str(context.peer() or "")
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer  # unix sockets and the like: one peer each


def authorise(
    federation: FederationService, context: Any, role: Role, admin_token: str
) -> Principal:
    """The caller, if its token's role allows ``role`` (else Unauthorized / Forbidden)."""
    return federation.accounts.authorise(bearer(context), role, bootstrap=admin_token)
