"""`fedgate keys`, `fedgate users` and `fedgate login`: a running server's admin API.

They talk to the server's REST API (``--server``, default ``$FEDGATE_SERVER`` or
http://127.0.0.1:8000) with a bearer token (``--token``, default ``$FEDGATE_TOKEN``): the
admin token `fedgate serve` prints, or a session token from `fedgate login`. Secrets
(a new key's secret, a login's token) go alone to stdout, so that a script can capture
them; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fedgate.cli_tls import add_client_tls_options, client_tls
from fedgate.core.accounts import Role
from fedgate.core.enrolment import KeyView
from fedgate.errors import ConfigError, Unauthorized
from fedgate.run.client_options import KEY_ENV

if TYPE_CHECKING:
    from fedgate.transport.rest.admin_client import AdminClient

SERVER_ENV = "FEDGATE_SERVER"
TOKEN_ENV = "FEDGATE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_SERVER = "http://127.0.0.1:8000"
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration(text: str) -> float:
    """argparse type: seconds, or a number with s, m, h or d (``90m``, ``7d``)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"a duration like 3600, 90m, 12h or 7d, not {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def add_access_commands(commands: Any) -> None:
    add_keys_command(commands)
    add_users_command(commands)
    login = commands.add_parser("login", help="log in; prints a session token for --token")
    login.add_argument("name")
    _password_options(login)
    _connection_options(login, token=False)
    login.set_defaults(handler=run_login)


def add_keys_command(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke client enrolment keys")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key; prints its secret, once")
    create.add_argument("name", help="what the key is for, e.g. the site it goes to")
    create.add_argument(
        "--max-clients", type=int, required=True, metavar="N", help="clients active at once"
    )
    create.add_argument(
        "--max-examples",
        type=int,
        required=True,
        dest="max_num_examples",
        metavar="N",
        help="the largest num_examples (aggregation weight) a client may claim",
    )
    create.add_argument("--expires-in", type=duration, help="e.g. 12h or 30d (default: never)")
    create.set_defaults(handler=run_keys_create)
    listing = actions.add_parser("list", help="every key with its limits and clients")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key; its clients leave the run")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=run_keys_revoke)
    for parser in (create, listing, revoke):
        _connection_options(parser)


def add_users_command(commands: Any) -> None:
    users = commands.add_parser("users", help="add, list and remove people's accounts")
    actions = users.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    _password_options(add)
    add.set_defaults(handler=run_users_add)
    listing = actions.add_parser("list", help="every user and role")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_users_list)
    remove = actions.add_parser("remove", help="remove a user; their sessions end")
    remove.add_argument("name")
    remove.set_defaults(handler=run_users_remove)
    for parser in (add, listing, remove):
        _connection_options(parser)


def run_keys_create(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        issued = admin.create_key(
            args.name, args.max_clients, args.max_num_examples, args.expires_in
        )
    key = issued.key
    _note(
        f"created enrolment key {key.key_id} ({key.name}): up to {key.max_clients} clients "
        f"at once, up to {key.max_num_examples} examples each, expires {_time(key.expires_at)}"
    )
    _note(f"its secret (shown only now; clients join with --key or ${KEY_ENV}):")
    print(issued.secret, flush=True)
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        keys = admin.list_keys()
    if args.json:
        print(json.dumps([asdict(k) for k in keys], indent=2))
        return 0
    rows: list[Sequence[str]] = [
        ("KEY ID", "NAME", "STATE", "CLIENTS", "MAX EXAMPLES", "CREATED", "EXPIRES")
    ]
    rows += [_key_row(k) for k in keys]
    _print_table(rows)
    return 0


def run_keys_revoke(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        key = admin.revoke_key(args.key_id)
    _note(f"revoked enrolment key {key.key_id} ({key.name}); its clients have left the run")
    return 0


def run_users_add(args: argparse.Namespace) -> int:
    password = _password(args, confirm=True)
    with _client(args) as admin:
        user = admin.add_user(args.name, password, Role(args.role))
    _note(f"added {user.name} ({user.role.value}); they log in with: fedgate login {user.name}")
    return 0


def run_users_list(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        users = admin.list_users()
    if args.json:
        print(json.dumps([asdict(u) for u in users], indent=2))
        return 0
    _print_table(
        [("NAME", "ROLE", "CREATED")] + [(u.name, u.role, _time(u.created_at)) for u in users]
    )
    return 0


def run_users_remove(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        admin.remove_user(args.name)
    _note(f"removed {args.name}")
    return 0


def run_login(args: argparse.Namespace) -> int:
    password = _password(args, confirm=False)
    with _client(args) as anonymous:
        result = anonymous.login(args.name, password)
    hours = result.expires_in_s / 3600
    _note(f"logged in as {result.principal.name} ({result.principal.role.value}) for {hours:g}h")
    _note(f"use the token below as --token or ${TOKEN_ENV}:")
    print(result.token, flush=True)
    return 0


# ---- helpers ----------------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, *, token: bool = True) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"the server's REST URL (default: ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    if token:
        parser.add_argument(
            "--token",
            default=os.environ.get(TOKEN_ENV, ""),
            help=f"admin token or session token (default: ${TOKEN_ENV})",
        )
    add_client_tls_options(parser)


def _password_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of asking",
    )


def _client(args: argparse.Namespace) -> AdminClient:
    token = getattr(args, "token", "")
    if token == "" and "token" in args:
        raise Unauthorized(f"this command needs an admin token: pass --token or set ${TOKEN_ENV}")
    from fedgate.transport.rest.admin_client import AdminClient  # noqa: PLC0415 - httpx here

    return AdminClient(args.server, token, tls=client_tls(args))


def _password(args: argparse.Namespace, *, confirm: bool) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise ConfigError("the two passwords differ")
    return password


def _key_row(key: KeyView) -> tuple[str, ...]:
    return (
        key.key_id,
        key.name,
        key.state.value,
        f"{key.clients}/{key.max_clients}",
        str(key.max_num_examples),
        _time(key.created_at),
        _time(key.expires_at),
    )


def _time(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
