"""`fedgate client`: its options here; the client runner (the transport the client asked
for; torch, later, on a worker thread) is imported only when the command runs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

from fedgate.cli_tls import add_client_tls_options, client_tls
from fedgate.cli_train import add_data_dir_option
from fedgate.cli_types import CODEC_HELP
from fedgate.run.client_options import DELTAS, KEY_ENV, ClientOptions
from fedgate.transport.connect import TRANSPORTS


def add_client_command(commands: Any) -> None:
    client = commands.add_parser("client", help="join a federation and train on local data")
    client.add_argument("--server", required=True, help="HOST:PORT (REST also takes a URL)")
    client.add_argument("--transport", required=True, choices=sorted(TRANSPORTS))
    client.add_argument(
        "--codec", default="raw", help=f"{CODEC_HELP}; checked as the client starts"
    )
    client.add_argument("--dataset", default="digits")
    client.add_argument("--model", default="cnn")
    add_data_dir_option(client)
    client.add_argument("--partition", default="iid")
    client.add_argument("--index", type=int, default=0, help="this client's part of the split")
    client.add_argument("--of", type=int, default=1, help="parts the data is split into")
    client.add_argument("--seed", type=int, default=0)
    client.add_argument("--name", default="")
    client.add_argument(
        "--key",
        default=os.environ.get(KEY_ENV, ""),
        help=f"the enrolment key, fgk_... (default: ${KEY_ENV}, which other users cannot "
        "read in the process list)",
    )
    client.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    client.add_argument(
        "--give-up-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="exit if the server stays unreachable this long (0, the default: never; a "
        "server restart, or a lost session, never ends the client)",
    )
    client.add_argument(
        "--deltas",
        choices=sorted(DELTAS),
        default="auto",
        help="send and receive model differences (auto: for lossy codecs)",
    )
    add_client_tls_options(client)
    client.set_defaults(handler=run_client_command, exit_at_once=True)


def client_options(args: argparse.Namespace) -> ClientOptions:
    """`ClientOptions` from the flags: one flag per field, named alike, but for these."""
    derived: dict[str, Any] = {
        "deltas": DELTAS[args.deltas],
        "tls": client_tls(args),
        "give_up_after_s": args.give_up_after or None,
        "data_dir": Path(args.data_dir) if args.data_dir else None,
    }
    names = [field.name for field in dataclasses.fields(ClientOptions)]
    return ClientOptions(**{n: derived[n] if n in derived else getattr(args, n) for n in names})


def run_client_command(args: argparse.Namespace) -> int:
    options = client_options(args)
    from fedgate.run.client_runner import run_client  # noqa: PLC0415 - the transports load here

    report = asyncio.run(run_client(options))
    who = report.client_id or options.name or f"client-{options.index}"  # "": never joined
    print(
        f"{who}: {len(report.rounds)} rounds sent, {len(report.dropped)} tasks "
        f"dropped, {report.rejoins} rejoins; {report.ended or 'interrupted'}"
    )
    return 0
