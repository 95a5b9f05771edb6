"""What the REST routes serve: one `FederationService` and the adapter's limits, kept on the app.

Routes are module-level functions (Starlette style); each reads the context through the
`current_context` dependency instead of closing over a federation, so a route is a plain
function of its request, and tests can build an app around any federation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from fedgate.core.service import FederationService
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts


@dataclass(frozen=True)
class RestContext:
    federation: FederationService
    admin_token: str
    max_update_bytes: int
    upload_timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS


def install_context(app: FastAPI, context: RestContext) -> None:
    app.state.fedgate = context


def current_context(request: Request) -> RestContext:
    context: RestContext = request.app.state.fedgate
    return context


def current_federation(request: Request) -> FederationService:
    return current_context(request).federation


# FastAPI runs a plain ``def`` dependency on a worker thread, a hop per request that cost
# a 10-client REST server 8 % of its event loop's time (py-spy): these never block, so
# they are coroutines and run on the loop.
async def context_dependency(request: Request) -> RestContext:
    return current_context(request)


async def federation_dependency(request: Request) -> FederationService:
    return current_federation(request)


Context = Annotated[RestContext, Depends(context_dependency)]
CurrentFederation = Annotated[FederationService, Depends(federation_dependency)]
