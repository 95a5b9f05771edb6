"""The operator routes: status, watch (server-sent events), pause/resume/stop, config, kick."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.gateway.server import Gateway, GatewaySettings
from tests.conftest import tiny_model
from tests.transport.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, Federation]]:
    federation = Federation(tiny_model(), RunConfig(rounds=3, min_clients=2))
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN)
    async with (
        Gateway(federation, settings) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=30) as client,
    ):
        yield client, federation


async def test_operators_steer_a_run(http: tuple[httpx.AsyncClient, Federation]) -> None:
    client, federation = http
    federation.start()
    joined = (await client.post("/api/v1/clients", json={"name": "a", "codec": "raw"})).json()
    changed = await client.patch(
        "/api/v1/run/config", headers=ADMIN, json={"clients_per_round": 3, "round_deadline_s": 5}
    )
    assert changed.status_code == 200
    assert changed.json()["pending_config"]["clients_per_round"] == 3
    bad = await client.patch("/api/v1/run/config", headers=ADMIN, json={"seed": 3})
    assert bad.status_code == 400
    assert (await client.post("/api/v1/run/pause", headers=ADMIN)).json()["state"] == "paused"
    assert (await client.post("/api/v1/run/resume", headers=ADMIN)).json()["state"] == "waiting"
    kicked = await client.post(
        f"/api/v1/clients/{joined['client_id']}/kick", headers=ADMIN, json={"reason": "testing"}
    )
    view = next(c for c in kicked.json()["clients"] if c["client_id"] == joined["client_id"])
    assert (view["state"], view["reason"]) == ("left", "testing")
    status = (await client.get("/api/v1/status", headers=ADMIN)).json()
    assert status["config"]["rounds"] == 3 and status["accuracy"] is None
    assert (await client.post("/api/v1/run/stop", headers=ADMIN)).json()["state"] == "stopped"
    again = await client.post("/api/v1/run/stop", headers=ADMIN)
    assert (again.status_code, again.json()["code"]) == (409, "run_not_active")


async def test_watch_streams_status_events_until_the_run_ends(
    http: tuple[httpx.AsyncClient, Federation],
) -> None:
    client, federation = http
    states: list[str] = []
    async with client.stream("GET", "/api/v1/status/watch", headers=ADMIN) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                states.append(json.loads(line.removeprefix("data: "))["state"])
                if len(states) == 1:
                    federation.stop()
    assert states[0] == "idle" and states[-1] == "stopped"
