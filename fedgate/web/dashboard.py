"""The dashboard: pages at ``/`` and ``/predict``, their static files under ``/ui``, and
the read-only routes the page needs beyond the operator API.

The page is static (HTML, plain JS modules, CSS in ``static/``: no data in them, so they
are served to anyone). Everything it shows comes from the API with the caller's
credential: the status as a stream (``GET /api/v1/dashboard/watch``, server-sent events
read with fetch, which can send a header where EventSource cannot), and the form's
settings (``GET /api/v1/dashboard``). Both take `fedgate.web.context.Reader`, so a
``--public-dashboard`` serves them to anyone while every action stays the operator API's
(``/api/v1/run/*``, ``/api/v1/clients/{id}/kick``, which always need a credential).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

from fedgate.codecs import codec_names
from fedgate.core.config import settings
from fedgate.core.messages import FederationStatus
from fedgate.core.service import FederationService
from fedgate.transport.rest import schemas
from fedgate.transport.rest.operator import EventStream
from fedgate.transport.watch import status_stream
from fedgate.web.context import CurrentWeb, Reader, WebContext

STATIC = Path(__file__).parent / "static"
# the settings the run panel's form offers (applied from the next round)
FORM_SETTINGS = (
    "rounds",
    "clients_per_round",
    "min_clients",
    "round_deadline_s",
    "learning_rate",
    "local_epochs",
    "strategy",
)
# the pages run only the package's own files: no inline script, nothing from elsewhere
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])
pages = APIRouter(include_in_schema=False)


class Json(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingJson(Json):
    name: str
    kind: str  # int | float | str | bool
    help: str
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    maximum: float | None = None
    choices: list[str] = []


class DashboardJson(Json):
    """What the page builds itself from: the run, its form, the codecs to download in."""

    run_id: str
    public: bool
    settings: list[SettingJson]
    codecs: list[str]


class SnapshotJson(Json):
    """One message of the dashboard's stream."""

    status: schemas.StatusJson
    open_round: schemas.OpenRoundJson | None  # also in the status; here for the page


def snapshot(federation: FederationService, watched: FederationStatus) -> SnapshotJson:
    """The status and the open round, read together (no await between: one moment of the
    run), with the client events of the watched status that woke the stream."""
    status = schemas.status_to_json(dataclasses.replace(federation.status(), events=watched.events))
    return SnapshotJson(status=status, open_round=status.open_round)


@router.get("", response_model=DashboardJson)
async def dashboard_info(caller: Reader, web: CurrentWeb) -> DashboardJson:
    """The run's id, whether read-only views are public, the form's settings with their
    bounds, and the codecs a model can be downloaded in."""
    return DashboardJson(
        run_id=web.federation.run_id,
        public=web.public_dashboard,
        settings=form_settings(),
        codecs=codec_names(),
    )


@router.get("/status", response_model=SnapshotJson)
async def dashboard_status(caller: Reader, web: CurrentWeb) -> SnapshotJson:
    """The status now, with the open round."""
    return snapshot(web.federation, web.federation.status())


@router.get("/watch", response_class=StreamingResponse)
async def dashboard_watch(caller: Reader, web: CurrentWeb) -> StreamingResponse:
    """Server-sent events: a ``snapshot`` per change (each status with its client events),
    until the run ends."""
    federation = web.federation

    async def events() -> AsyncIterator[str]:
        async for status in status_stream(federation):
            body = snapshot(federation, status).model_dump_json()
            yield f"event: snapshot\ndata: {body}\n\n"

    return EventStream(events(), media_type="text/event-stream")


def form_settings() -> list[SettingJson]:
    declared = {s.name: s for s in settings()}
    found = []
    for name in FORM_SETTINGS:
        setting = declared[name]
        option = setting.option
        found.append(
            SettingJson(
                name=name,
                kind=setting.kind.__name__,
                help=option.help,
                minimum=_finite(option.ge),
                above=_finite(option.gt),
                maximum=_finite(option.le),
                choices=list(option.choices()) if option.choices else [],
            )
        )
    return found


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html", headers=PAGE_HEADERS)


@pages.get("/")
async def dashboard_page() -> FileResponse:
    return page("index.html")


@pages.get("/predict")
async def predict_page() -> FileResponse:
    return page("predict.html")


def install(app: FastAPI, context: WebContext) -> None:
    """The pages, their static files and the dashboard's read-only routes."""
    app.include_router(pages)
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")
