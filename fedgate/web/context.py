"""What the web routes (dashboard, inference, runs, metrics) serve, kept on the app.

`WebContext` is built once by the gateway (`fedgate.gateway.serve`) and installed on the
REST adapter's FastAPI app by `fedgate.web.app.web_extensions`; routes read it through the
`CurrentWeb` dependency, as the REST routes read theirs (`fedgate.transport.rest.context`).

Access: actions (pause, kick, deploy...) take `fedgate.transport.rest.access.Operator` as
every operator route does. Read-only views (status, runs, the models list) take `Reader`:
a viewer's credential, or nobody's when the server runs with ``--public-dashboard``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from fedgate.core.accounts import Principal, Role
from fedgate.core.inference import Deployment
from fedgate.core.ports import RunStore
from fedgate.core.service import FederationService
from fedgate.errors import ConfigError
from fedgate.transport.rest.access import Credential

# who reads a public dashboard without a credential (never an actor: actions need one)
ANONYMOUS = Principal("anonymous", Role.VIEWER)


@dataclass(frozen=True)
class WebContext:
    """One server's web side: the run it serves and how it may be read."""

    federation: FederationService
    runs: RunStore | None = None  # past runs and model versions; None: no store
    admin_token: str = ""  # the server's bootstrap credential (gRPC routes check it too)
    public_dashboard: bool = False  # read-only views need no credential
    dataset: str = "digits"  # what the run trains on (inference shapes its inputs by it)
    model: str = "cnn"
    # inference on the run's models (`fedgate.web.inference`); None: no predict routes
    deployment: Deployment | None = None
    public_predict: bool = False  # predictions need no credential (else a viewer's)


def install_web_context(app: FastAPI, context: WebContext) -> None:
    app.state.fedgate_web = context


def current_web(request: Request) -> WebContext:
    context = getattr(request.app.state, "fedgate_web", None)
    if not isinstance(context, WebContext):
        raise ConfigError("the web extensions were not installed on this app")
    return context


async def web_dependency(request: Request) -> WebContext:
    return current_web(request)  # a coroutine: FastAPI runs a plain def on a worker thread


CurrentWeb = Annotated[WebContext, Depends(web_dependency)]


async def reader(request: Request, token: Credential) -> Principal:
    """The caller of a read-only view: anyone on a public dashboard (a credential given is
    still checked, so a bad one is refused rather than ignored), else a viewer or above."""
    context = current_web(request)
    if context.public_dashboard and not token:
        return ANONYMOUS
    return context.federation.accounts.authorise(token, Role.VIEWER, bootstrap=context.admin_token)


Reader = Annotated[Principal, Depends(reader)]
