"""The layering rules of shared/DESIGN.md, checked on the source and at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fedgate"
FORBIDDEN = {
    "core": {
        "grpc",
        "fastapi",
        "starlette",
        "httpx",
        "aiohttp",
        "uvicorn",
        "sqlalchemy",
        "alembic",
        "prometheus_client",
        "PIL",
        "fedgate.transport",
        "fedgate.gateway",
        "fedgate.store",
        "fedgate.web",
        "fedgate.run",
        "fedgate.cli",
    },
    # adapters map the wire to the core; what composes them (gateway, web) and what keeps
    # runs (store) sits above or beside them
    "transport": {
        "sqlalchemy",
        "fedgate.gateway",
        "fedgate.store",
        "fedgate.web",
        "fedgate.run",
        "fedgate.cli",
    },
    # simulations, launched processes, engines and results drive servers as a user does:
    # through processes and the wire (ready files, the admin API), never the gateway's
    # internals, the store's tables or the web app
    "run": {
        "fastapi",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "alembic",
        "matplotlib",
        "fedgate.gateway",
        "fedgate.store",
        "fedgate.web",
        "fedgate.report",
        "fedgate.cli",
        "fedgate.transport.grpc.server",
        "fedgate.transport.rest.server",
        "fedgate.transport.rest.app",
    },
    # the server process: what drives federations (run, experiment) and reports sits above
    # it; it writes a run's results document with `fedgate.run.results`, a leaf on the core
    "gateway": {
        "matplotlib",
        "fedgate.cli",
        "fedgate.experiment",
        "fedgate.report",
        "fedgate.run.simulation",
        "fedgate.run.launch",
        "fedgate.run.client_runner",
        "fedgate.run.engines",
        "fedgate.run.centralized",
    },
    "store": {
        "grpc",
        "fastapi",
        "starlette",
        "httpx",
        "aiohttp",
        "uvicorn",
        "fedgate.transport",
        "fedgate.gateway",
        "fedgate.web",
    },
    "codecs": {
        "grpc",
        "fastapi",
        "starlette",
        "httpx",
        "aiohttp",
        "uvicorn",
        "sqlalchemy",
        "fedgate.core",
        "fedgate.transport",
        "fedgate.gateway",
        "fedgate.store",
    },
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imported_modules(path):
            for banned in FORBIDDEN[layer]:
                assert not (name == banned or name.startswith(banned + ".")), (
                    f"{path.relative_to(PACKAGE.parent)} imports {name}"
                )


def test_importing_the_core_loads_no_web_or_rpc_library() -> None:
    probe = (
        "import sys, fedgate.core.federation, fedgate.core.client, fedgate.codecs;"
        "print(sorted(m for m in ('grpc','fastapi','starlette','httpx','aiohttp','sqlalchemy')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_client_command_loads_no_server_web_stack() -> None:
    # `fedgate client` processes start by the dozen; FastAPI, Starlette and uvicorn are the
    # server's, and importing them costs each client a few hundred milliseconds.
    probe = (
        "import sys, fedgate.cli, fedgate.run.client_runner, fedgate.transport.connect;"
        "print(sorted(m for m in ('fastapi','starlette','uvicorn','sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_training_loads_without_the_codecs() -> None:
    # The flower bench suite trains and evaluates with fedgate.core.training in Flower's
    # own virtualenv, which has torch but no zstandard or msgpack.
    probe = (
        "import sys, fedgate.core.training;"
        "print(sorted(m for m in ('fedgate.codecs','zstandard','msgpack') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
