"""Who may use the dashboard, over a real gateway on loopback: its pages and static files
are anyone's (they hold no data); its views need a viewer's credential unless the server
runs with ``--public-dashboard``; its actions need an operator's credential always."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.web.app import web_extensions, web_modules
from fedgate.web.context import WebContext
from fedgate.web.dashboard import FORM_SETTINGS
from tests.conftest import tiny_model

TOKEN = "dashboard-test-admin-token"
# a script, style or module loaded from another origin
REMOTE = re.compile(r"""(?:src=|href=|from |import\()\s*["'](?:https?:)?//""")
DASHBOARD_ONLY = ("fedgate.web.dashboard",)
VIEWS = ("/api/v1/dashboard", "/api/v1/dashboard/status")
ACTIONS = (
    ("POST", "/api/v1/run/pause", None),
    ("POST", "/api/v1/run/resume", None),
    ("PATCH", "/api/v1/run/config", {"clients_per_round": 2}),
    ("POST", "/api/v1/clients/nobody/kick", None),
    ("POST", "/api/v1/run/stop", None),
)


@asynccontextmanager
async def dashboard(public: bool) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway serving a federation with the dashboard, and an HTTP client for it."""
    federation = Federation(tiny_model(), RunConfig(rounds=3, min_clients=1))
    context = WebContext(federation, admin_token=TOKEN, public_dashboard=public)
    settings = GatewaySettings(
        grpc_port=0,
        http_port=0,
        admin_token=TOKEN,
        extensions=web_extensions(context, DASHBOARD_ONLY),
    )
    async with (
        Gateway(federation, settings) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=10.0) as client,
    ):
        yield client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("public", [False, True])
async def test_pages_and_static_files_are_anyones_and_run_only_their_own_scripts(
    public: bool,
) -> None:
    async with dashboard(public) as client:
        for path, script in (("/", "/ui/dashboard.js"), ("/predict", "/ui/predict.js")):
            page = await client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            policy = page.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "unsafe-inline" not in policy
            assert f'src="{script}"' in page.text and 'href="/ui/style.css"' in page.text
            assert not REMOTE.search(page.text)  # nothing from a CDN
        for asset in (
            "api.js",
            "charts.js",
            "dashboard.js",
            "history.js",
            "store.js",
            "predict.js",
        ):
            code = await client.get(f"/ui/{asset}")
            assert code.status_code == 200, asset
            assert "javascript" in code.headers["content-type"]
            assert not REMOTE.search(code.text), asset


async def test_without_public_dashboard_every_view_and_action_needs_the_token() -> None:
    async with dashboard(public=False) as client:
        for path in (*VIEWS, "/api/v1/dashboard/watch"):
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers=bearer("wrong"))).status_code == 401, path
        for method, path, body in ACTIONS:
            refused = await client.request(method, path, json=body)
            assert refused.status_code == 401, path
            assert refused.headers["content-type"] == "application/problem+json"
        status = await client.get("/api/v1/dashboard/status", headers=bearer())
        assert status.status_code == 200
        assert status.json()["status"]["state"] == "idle"  # no action got through


async def test_a_public_dashboard_shows_views_to_anyone_but_actions_still_need_the_token() -> None:
    async with dashboard(public=True) as client:
        for path in VIEWS:
            assert (await client.get(path)).status_code == 200, path
            # a credential that is given is checked, not ignored
            assert (await client.get(path, headers=bearer("wrong"))).status_code == 401, path
        for method, path, body in ACTIONS:
            assert (await client.request(method, path, json=body)).status_code == 401, path
        paused = await client.post("/api/v1/run/pause", headers=bearer())
        assert paused.status_code == 200 and paused.json()["state"] == "paused"


async def test_the_form_offers_the_run_settings_with_their_bounds() -> None:
    async with dashboard(public=False) as client:
        info = (await client.get("/api/v1/dashboard", headers=bearer())).json()
    assert [s["name"] for s in info["settings"]] == list(FORM_SETTINGS)
    by_name = {s["name"]: s for s in info["settings"]}
    assert by_name["clients_per_round"] == {
        "name": "clients_per_round",
        "kind": "int",
        "help": "clients selected per round (0: all ready)",
        "minimum": 0.0,
        "above": None,
        "maximum": 1_000_000.0,
        "choices": [],
    }
    assert "fedavg" in by_name["strategy"]["choices"]
    assert info["public"] is False and "raw" in info["codecs"]


async def test_the_stream_sends_snapshots_to_a_reader() -> None:
    async with (
        dashboard(public=True) as client,
        client.stream("GET", "/api/v1/dashboard/watch") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert await anext(lines) == "event: snapshot"
        data = await anext(lines)
    snapshot = json.loads(data.removeprefix("data: "))
    assert snapshot["open_round"] is None  # no round has opened
    assert snapshot["status"]["config"]["rounds"] == 3


def test_a_missing_web_module_is_left_out_and_the_others_are_served() -> None:
    names = ("fedgate.web.dashboard", "fedgate.web.not_written_yet")
    assert [m.__name__ for m in web_modules(names)] == ["fedgate.web.dashboard"]
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=1))
    extensions = web_extensions(WebContext(federation), names)
    assert len(extensions.rest) == 2  # the context, then the dashboard's routes
    assert extensions.grpc == () and extensions.grpc_interceptors == ()
