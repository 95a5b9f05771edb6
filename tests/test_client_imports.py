"""What a `fedgate client` process loads: its own transport and codec, no server, no web
stack, no plotting (issue 14's lazy imports, and the reason clients start quickly).

The client runs for real against a real `fedgate serve` with ``PYTHONPROFILEIMPORTTIME``
set (what ``python -X importtime`` sets): Python then writes every module it imports to
stderr, which lands in the client's log.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedgate.run.launch import start_client, start_server, stop_process

SERVER_SIDE = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "prometheus_client",
    "matplotlib",
    "PIL",
    "fedgate.gateway",
    "fedgate.web",
    "fedgate.store",
    "fedgate.report",
    "fedgate.core.federation",
    "fedgate.core.scheduler",
    "fedgate.core.service",
    "fedgate.core.rounds",
    "fedgate.core.admission",
    "fedgate.transport.rest.server",
    "fedgate.transport.grpc.server",
    "fedgate.transport.grpc.work_calls",
    "fedgate.run.simulation",
}
# each transport's client leaves the other's library alone (and httpx, the admin client's)
OTHER_WIRE = {"rest": {"grpc", "fedgate.transport.grpc", "httpx"}, "grpc": {"aiohttp", "httpx"}}
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")
PARSER_HEAVY = (
    "torch",
    "grpc",
    "aiohttp",
    "httpx",
    "fastapi",
    "uvicorn",
    "matplotlib",
    "sqlalchemy",
)


def imported(log: str) -> set[str]:
    """Module names from ``-X importtime`` lines (indentation shows nesting; we want all)."""
    return {m.group(1) for line in log.splitlines() if (m := IMPORT_LINE.match(line))}


def banned_in(modules: set[str], banned: set[str]) -> list[str]:
    return sorted(m for m in modules for b in banned if m == b or m.startswith(b + "."))


def test_building_the_cli_parser_loads_no_heavy_library() -> None:
    probe = (
        "import sys, fedgate.cli; fedgate.cli.build_parser();"
        f"print(sorted(m for m in {PARSER_HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_client_process_loads_only_its_own_side(
    transport: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(
        ["--rounds", "1", "--min-clients", "1", "--exit-when-done"], tmp_path, key_clients=1
    )
    try:
        monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the client's, not the server's
        log = tmp_path / "client.log"
        client = start_client(server, transport, ["--codec", "raw"], log)
        assert client.wait(120) == 0, log.read_text()[-3000:]
    finally:
        stop_process(server.process)
    modules = imported(log.read_text())
    assert "fedgate.core.client" in modules and "torch" in modules  # the probe works
    assert f"fedgate.transport.{transport}.client" in modules
    assert banned_in(modules, SERVER_SIDE | OTHER_WIRE[transport]) == []
