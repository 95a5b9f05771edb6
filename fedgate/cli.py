"""The `fedgate` command: serve | client | sim | train | experiment | demo | bench | report | ….

Building the parser imports no torch, gRPC, web stack or plotting: each command's module
loads what it runs when it runs (tests/test_client_imports.py holds a REST client to that).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from fedgate.cli_access import add_access_commands
from fedgate.cli_bench import add_bench_command, add_report_command
from fedgate.cli_client import add_client_command
from fedgate.cli_experiment import add_experiment_command
from fedgate.cli_serve import add_serve_command
from fedgate.cli_sim import add_demo_command, add_sim_command
from fedgate.cli_store import add_store_commands
from fedgate.cli_train import add_train_command
from fedgate.cli_types import add_codecs_command
from fedgate.errors import FedgateError


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parse(sys.argv[1:] if argv is None else argv))


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    args.argv = list(argv)
    return args


def execute(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if args.info else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.handler(args)
    except FedgateError as exc:
        print(f"fedgate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def run() -> NoReturn:
    """The `fedgate` process (the console script and ``python -m fedgate``). A command
    that sets ``exit_at_once`` (serve, client: their stores, servers and connections are
    closed when they return) leaves without tearing the interpreter down, which for torch,
    gRPC and the web stack costs half a second at the end of every such process (0.47 s
    for the server's imports alone, measured) and releases nothing the kernel does not."""
    args = parse(sys.argv[1:])
    code = execute(args)
    if getattr(args, "exit_at_once", False):
        logging.shutdown()  # what log handlers still hold is written first
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--info", action="store_true", help="progress logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    add_serve_command(commands)
    add_client_command(commands)
    add_access_commands(commands)
    add_store_commands(commands)
    add_sim_command(commands)
    add_train_command(commands)
    add_experiment_command(commands)
    add_demo_command(commands)
    add_bench_command(commands)
    add_report_command(commands)
    add_codecs_command(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
