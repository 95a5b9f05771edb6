"""The runs the store holds, over REST, for the dashboard's runs panel: a reader's (see
`fedgate.web.context.Reader`).

- ``GET /api/v1/runs``: every run, newest first, with its final (latest) accuracy;
- ``GET /api/v1/runs/{id}``: one run whole (config, config changes, every round attempt,
  clients), the document ``fedgate runs export --format json`` writes;
- ``GET /api/v1/runs/{id}/export?format=json|csv``: that document, or the round attempts
  as CSV, as a file to save: byte for byte what ``fedgate runs export`` writes.

Reading a run reads its latest model too (the store checks its hash), which is work for a
large model: reads go one at a time, and a finished run's documents are kept (they no
longer change).
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, Field

from fedgate.core.ports import RunStore
from fedgate.errors import StoreError
from fedgate.store.export import rounds_csv, run_document
from fedgate.web.context import CurrentWeb, Reader, WebContext

router = APIRouter(prefix="/api/v1", tags=["runs"])
RunId = Annotated[str, Path(max_length=64)]
KEPT_DOCUMENTS = 16  # finished runs' documents kept in memory


class ExportFormat(enum.StrEnum):
    JSON = "json"
    CSV = "csv"


class RunSummaryJson(BaseModel):
    run_id: str
    state: str
    dataset: str
    model: str
    created_at: float
    rounds_completed: int
    rounds: int
    accuracy: float | None = Field(description="the latest completed round's (null: none)")
    serving: bool = Field(description="the run this server is running")


class RunListJson(BaseModel):
    runs: list[RunSummaryJson]


class Documents:
    """Finished runs' export documents, newest use last; one store read at a time."""

    def __init__(self, size: int = KEPT_DOCUMENTS) -> None:
        self.size = size
        self._kept: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        self._reading = asyncio.Semaphore(1)

    async def of(self, store: RunStore, run_id: str) -> tuple[dict[str, Any], str]:
        """(the JSON document, the CSV) of ``run_id`` (`NotFound` if the store has none)."""
        if run_id in self._kept:
            self._kept.move_to_end(run_id)
            return self._kept[run_id]
        async with self._reading:
            run = await asyncio.to_thread(store.load_run, run_id)
        documents = run_document(run), rounds_csv(run)
        if run.finished:
            self._kept[run_id] = documents
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return documents


async def documents_of(request: Request) -> Documents:  # on the loop: it never blocks
    documents: Documents = request.app.state.fedgate_run_documents
    return documents


RunDocuments = Annotated[Documents, Depends(documents_of)]


def store_of(web: WebContext) -> RunStore:
    if web.runs is None:
        raise StoreError("this server keeps no runs (it was started without a store)")
    return web.runs


@router.get("/runs", response_model=RunListJson)
async def list_runs(reader: Reader, web: CurrentWeb) -> RunListJson:
    """Every run in the store, newest first."""
    summaries = await asyncio.to_thread(store_of(web).list_runs)
    serving = web.federation.run_id
    return RunListJson(
        runs=[
            RunSummaryJson(
                run_id=s.run_id,
                state=s.state.value,
                dataset=s.dataset,
                model=s.model,
                created_at=s.created_at,
                rounds_completed=s.rounds_completed,
                rounds=s.rounds,
                accuracy=s.accuracy if math.isfinite(s.accuracy) else None,
                serving=s.run_id == serving,
            )
            for s in summaries
        ]
    )


@router.get("/runs/{run_id}", response_model=dict[str, Any])
async def get_run(
    run_id: RunId, reader: Reader, web: CurrentWeb, documents: RunDocuments
) -> dict[str, Any]:
    """A run whole: what ``fedgate runs export --format json`` writes (NaN as null)."""
    document, _ = await documents.of(store_of(web), run_id)
    return document


@router.get("/runs/{run_id}/export", response_class=Response)
async def export_run(
    run_id: RunId,
    reader: Reader,
    web: CurrentWeb,
    documents: RunDocuments,
    as_: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.JSON,
) -> Response:
    """The run as ``fedgate runs export`` writes it, as a file: JSON (the whole run) or
    CSV (one row per round attempt)."""
    document, table = await documents.of(store_of(web), run_id)
    if as_ is ExportFormat.JSON:
        text, media_type = (
            json.dumps(document, indent=2, allow_nan=False) + "\n",
            "application/json",
        )
    else:
        text, media_type = table, "text/csv"
    filename = f"fedgate-run-{run_id}.{as_.value}"
    return Response(
        text,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def install(app: FastAPI, context: WebContext) -> None:
    app.state.fedgate_run_documents = Documents()
    app.include_router(router)
