"""The server adapters' seam: `Federation` is a `FederationService`, and the seam lists
exactly what the adapters use (mypy checks the first, the AST the second)."""

from __future__ import annotations

import ast
from pathlib import Path

from fedgate.core.federation import Federation
from fedgate.core.service import FederationService
from tests.conftest import tiny_model

PACKAGE = Path(__file__).resolve().parents[2] / "fedgate"
# the server side: its adapters and the gateway; the code that builds a federation
# (gateway/serve.py) and the client-only in-process transport hold the concrete class
SERVER_SIDE = [
    path
    for folder in ("transport", "gateway")
    for path in sorted((PACKAGE / folder).rglob("*.py"))
    if path.name not in {"serve.py", "inproc.py"} and "proto" not in path.parts
]
SEAM = {
    "run_id", "state", "enrolment", "accounts",
    "join", "next_task", "fetch_model", "authenticate", "begin_update", "finish_update",
    "abandon_update", "heartbeat", "leave",
    "status", "watch", "pause", "resume", "stop", "update_config", "kick", "revoke_key",
    "close",
}  # fmt: skip


def seam_members() -> set[str]:
    return {name for name in vars(FederationService) if not name.startswith("_")}


async def test_the_federation_is_a_federation_service() -> None:
    federation = Federation(tiny_model())
    service: FederationService = federation  # mypy --strict checks Federation against it
    assert seam_members() == SEAM
    for name in SEAM:
        assert hasattr(service, name), name
    await service.close()


def test_the_server_side_names_no_concrete_federation() -> None:
    for path in SERVER_SIDE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "fedgate.core.federation":
                names = {alias.name for alias in node.names}
                assert "Federation" not in names, f"{path.relative_to(PACKAGE.parent)}"


def test_the_server_side_uses_only_the_seam() -> None:
    """Every ``federation.X`` / ``service.X`` the adapters and the gateway read is in it."""
    used: set[str] = set()
    for path in SERVER_SIDE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                owner = node.value
                if isinstance(owner, ast.Attribute) and owner.attr == "federation":
                    used.add(node.attr)  # self.federation.X, context.federation.X
                elif isinstance(owner, ast.Name) and owner.id in {"federation", "service"}:
                    used.add(node.attr)
    assert used, "found no federation calls: has the server side moved?"
    assert used <= SEAM, used - SEAM
