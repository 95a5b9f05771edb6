"""A finished run's server stays up for people to look at (`fedgate demo --keep-serving`):
a real `fedgate serve --exit-when-done --keep-serving` with real client processes."""

from __future__ import annotations

import time

import httpx
import pytest

from fedgate.run.launch import ServerProcess
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import run_simulation

KEEP_SERVING_S = 2.0


@pytest.mark.timeout(120)
def test_the_server_serves_its_dashboard_after_the_run_then_exits() -> None:
    seen: dict[str, object] = {}

    def on_server(server: ServerProcess) -> None:
        seen["url"] = server.http_url

    def on_results(document: dict[str, object]) -> None:
        # the run is over and its results are out; the server answers all the same
        url = seen["url"]
        seen["page"] = httpx.get(f"{url}/", timeout=5.0).status_code
        # --public-dashboard: the read-only views need no token
        snapshot = httpx.get(f"{url}/api/v1/dashboard/status", timeout=5.0).json()
        seen["state"] = snapshot["status"]["state"]
        seen["results_at"] = time.monotonic()

    config = SimConfig(clients=2, rounds=1, transport="rest", codec="raw")
    document = run_simulation(
        config,
        on_server=on_server,
        keep_serving_s=KEEP_SERVING_S,
        on_results=on_results,
        serve_args=("--public-dashboard",),
    )
    served_on = time.monotonic() - float(seen["results_at"])  # type: ignore[arg-type]
    assert (seen["page"], seen["state"]) == (200, "finished")
    assert KEEP_SERVING_S * 0.75 <= served_on < KEEP_SERVING_S + 15.0  # then it exited
    assert len(document["rounds"]) == 1
