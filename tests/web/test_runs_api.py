"""The runs API over a real gateway on loopback and a real SQLite file: the runs the store
holds, each whole, and its exports byte for byte what ``fedgate runs export`` writes."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fedgate.cli import main
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.ports import RunMeta
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.store import SqlStore, open_store
from fedgate.web.app import web_extensions
from fedgate.web.context import WebContext
from tests.conftest import tiny_model
from tests.store.scenario import play_runs

TOKEN = "runs-api-test-admin-token"
RUNS_ONLY = ("fedgate.web.runs_api",)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    http: httpx.AsyncClient
    store: SqlStore
    url: str  # the database's
    serving: str  # the run the gateway serves


@asynccontextmanager
async def runs_api(
    tmp_path: Path, *, public: bool = False, store: bool = True
) -> AsyncIterator[Served]:
    url = f"sqlite:///{tmp_path / 'fedgate.db'}"
    with open_store(url) as sql:
        play_runs(sql.runs)  # three runs: finished, paused, stopped
        federation = Federation(
            tiny_model(), RunConfig(rounds=3), store=sql.runs, meta=RunMeta("", "digits", "cnn")
        )
        await federation.recorder.flush()  # the serving run is in the store
        context = WebContext(
            federation, runs=sql.runs if store else None, admin_token=TOKEN, public_dashboard=public
        )
        settings = GatewaySettings(
            grpc_port=0,
            http_port=0,
            admin_token=TOKEN,
            extensions=web_extensions(context, RUNS_ONLY),
        )
        async with (
            Gateway(federation, settings) as gateway,
            httpx.AsyncClient(base_url=gateway.http_url, timeout=10.0) as http,
        ):
            yield Served(http, sql, url, federation.run_id)


def cli_export(url: str, run_id: str, kind: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["runs", "export", run_id, "--format", kind, "--db", url]) == 0
    return capsys.readouterr().out


async def test_every_run_is_listed_newest_first(tmp_path: Path) -> None:
    async with runs_api(tmp_path) as served:
        response = await served.http.get("/api/v1/runs", headers=AUTH)
        assert response.status_code == 200
        runs = response.json()["runs"]
        stored = served.store.runs.list_runs()
        assert [r["run_id"] for r in runs] == [served.serving, "run-2", "run-1", "run-0"]
        assert [r["run_id"] for r in runs] == [s.run_id for s in stored]
        assert [r["serving"] for r in runs] == [True, False, False, False]
        assert [r["state"] for r in runs] == ["idle", "stopped", "paused", "finished"]
        assert [r["accuracy"] for r in runs] == [None, None, 0.75, 0.75]
        assert [(r["rounds_completed"], r["rounds"]) for r in runs] == [
            (0, 3),
            (0, 5),
            (2, 5),
            (2, 5),
        ]
        for listed, summary in zip(runs, stored, strict=True):
            assert (listed["dataset"], listed["model"]) == (summary.dataset, summary.model)
            assert math.isclose(listed["created_at"], summary.created_at)


async def test_a_run_and_its_exports_are_what_runs_export_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with runs_api(tmp_path) as served:
        for run_id in ("run-0", "run-1", served.serving):
            as_json = cli_export(served.url, run_id, "json", capsys)
            as_csv = cli_export(served.url, run_id, "csv", capsys)
            whole = await served.http.get(f"/api/v1/runs/{run_id}", headers=AUTH)
            assert whole.status_code == 200 and whole.json() == json.loads(as_json)
            for kind, expected, media_type in (
                ("json", as_json, "application/json"),
                ("csv", as_csv, "text/csv; charset=utf-8"),
            ):
                export = await served.http.get(
                    f"/api/v1/runs/{run_id}/export", params={"format": kind}, headers=AUTH
                )
                assert export.status_code == 200
                assert export.text == expected  # byte for byte
                assert export.headers["content-type"] == media_type
                disposition = f'attachment; filename="fedgate-run-{run_id}.{kind}"'
                assert export.headers["content-disposition"] == disposition
        default = await served.http.get("/api/v1/runs/run-1/export", headers=AUTH)
        assert default.text == cli_export(served.url, "run-1", "json", capsys)


async def test_unknown_runs_and_formats_are_refused(tmp_path: Path) -> None:
    async with runs_api(tmp_path) as served:
        for path, params, status, code in (
            ("/api/v1/runs/nope", {}, 404, "not_found"),
            ("/api/v1/runs/nope/export", {}, 404, "not_found"),
            ("/api/v1/runs/run-1/export", {"format": "xml"}, 400, "bad_request"),
            ("/api/v1/runs/" + "x" * 65, {}, 400, "bad_request"),
        ):
            response = await served.http.get(path, params=params, headers=AUTH)
            assert (response.status_code, response.json()["code"]) == (status, code), path
            assert response.headers["content-type"] == "application/problem+json"
    async with runs_api(tmp_path / "none", store=False) as served:
        response = await served.http.get("/api/v1/runs", headers=AUTH)
        assert (response.status_code, response.json()["code"]) == (503, "store_error")


@pytest.mark.parametrize("public", [False, True])
async def test_runs_need_a_viewer_unless_the_dashboard_is_public(
    tmp_path: Path, public: bool
) -> None:
    async with runs_api(tmp_path, public=public) as served:
        for path in ("/api/v1/runs", "/api/v1/runs/run-1", "/api/v1/runs/run-1/export"):
            anonymous = await served.http.get(path)
            assert anonymous.status_code == (200 if public else 401), path
            wrong = await served.http.get(path, headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401, path  # a bad credential is refused, not ignored
