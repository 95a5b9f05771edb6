"""`fedgate keys`, `fedgate users` and `fedgate login` against a real server on loopback."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest
from argon2 import PasswordHasher

from fedgate.cli import main
from fedgate.cli_access import duration
from fedgate.core.accounts import Accounts
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.gateway.server import Gateway, GatewaySettings
from tests.conftest import tiny_model

TOKEN = "cli-admin-token"
PASSWORD = "a long enough password"


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    federation = Federation(
        tiny_model(),
        RunConfig(rounds=2, min_clients=2),
        enrolment="key",
        accounts=Accounts(hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)),
    )
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=TOKEN)
    async with Gateway(federation, settings) as served:
        yield served


async def fedgate(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    """Run the CLI in a thread (the server shares this event loop); (code, out, err)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_an_admin_manages_keys_and_users_from_the_command_line(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", gateway.http_url)
    admin = (*server, "--token", TOKEN)
    code, out, err = await fedgate(
        capsys,
        *("keys", "create", "hospital-a", "--max-clients", "3", "--max-examples", "5000"),
        *("--expires-in", "7d", *admin),
    )
    assert code == 0
    secret = out.strip()  # the secret alone on stdout, for scripts
    assert secret.startswith("fgk_") and "hospital-a" in err and "5000 examples" in err
    key_id = secret.split("_")[1]
    gateway.federation.enrolment.verify(secret)

    code, out, _ = await fedgate(capsys, "keys", "list", "--json", *admin)
    (listed,) = json.loads(out)
    assert (listed["key_id"], listed["state"], listed["max_clients"]) == (key_id, "active", 3)
    assert secret not in out
    code, out, _ = await fedgate(capsys, "keys", "list", *admin)
    assert out.splitlines()[0].split()[:3] == ["KEY", "ID", "NAME"] and key_id in out

    code, _, err = await fedgate(
        capsys,
        "users",
        "add",
        "ola",
        "--role",
        "viewer",
        "--password-stdin",
        *admin,
        stdin=PASSWORD + "\n",
    )
    assert code == 0 and "added ola (viewer)" in err
    code, out, err = await fedgate(
        capsys, "login", "ola", "--password-stdin", *server, stdin=PASSWORD + "\n"
    )
    viewer = out.strip()
    assert code == 0 and viewer.startswith("fgs_")
    code, _, err = await fedgate(capsys, "keys", "revoke", key_id, *server, "--token", viewer)
    assert code == 2 and "this needs admin" in err  # a viewer may not
    code, _, err = await fedgate(capsys, "keys", "revoke", key_id, *admin)
    assert code == 0 and f"revoked enrolment key {key_id}" in err
    code, out, _ = await fedgate(capsys, "users", "list", "--json", *admin)
    assert [(u["name"], u["role"]) for u in json.loads(out)] == [("ola", "viewer")]
    code, _, _ = await fedgate(capsys, "users", "remove", "ola", *admin)
    assert code == 0 and gateway.federation.accounts.list_users() == []


async def test_without_a_token_the_command_says_how_to_give_one(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDGATE_TOKEN", raising=False)
    code, _, err = await fedgate(capsys, "keys", "list", "--server", gateway.http_url)
    assert code == 2 and "--token or set $FEDGATE_TOKEN" in err


def test_durations_take_units() -> None:
    assert [duration(t) for t in ("90", "90s", "30m", "12h", "7d", "1.5h")] == [
        90.0,
        90.0,
        1800.0,
        43_200.0,
        604_800.0,
        5400.0,
    ]
    for bad in ("", "0", "-5m", "3w", "h"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)
