"""`fedgate serve`: its options here; the server (FastAPI, uvicorn, gRPC, SQLAlchemy) is
imported only when the command runs."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from fedgate.cli_config import add_config_options
from fedgate.cli_limits import add_limit_options, join_limits, max_update_bytes, upload_timeouts
from fedgate.cli_tls import add_server_tls_options, server_tls
from fedgate.cli_train import add_data_dir_option
from fedgate.core.config import EVALUATE_IN, RunConfig, settings_of
from fedgate.errors import ConfigError


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """A flag per run setting, derived from `RunConfig`'s declaration (`fedgate.cli_config`)."""
    add_config_options(parser.add_argument_group("run"))


def add_serve_command(commands: Any) -> None:
    serve_parser = commands.add_parser("serve", help="serve a federation over gRPC and REST")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--grpc-port", type=int, default=50051, help="0: any free port")
    serve_parser.add_argument("--http-port", type=int, default=8000, help="0: any free port")
    serve_parser.add_argument(
        "--admin-token", default="", help="operator token (default: generated and printed)"
    )
    add_limit_options(serve_parser)
    serve_parser.add_argument("--dataset", default="digits", help="for server-side evaluation")
    serve_parser.add_argument("--model", default="cnn")
    add_data_dir_option(serve_parser)
    serve_parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for the server's own tensor work: update checks, aggregation, "
        "evaluation (0: torch's default, one per core; fedgate sim gives its server 1, as "
        "each of its clients: on a machine shared with them more only compete)",
    )
    serve_parser.add_argument(
        "--evaluate-in",
        choices=EVALUATE_IN,
        default="process",
        help="where each new model is evaluated on the held-out split: a worker process at "
        "the lowest CPU priority (default; it takes only CPU the rounds leave idle), or a "
        "thread of the server (for a machine kept busy by other work)",
    )
    serve_parser.add_argument("--ready-file", type=Path, help="write the bound ports here")
    serve_parser.add_argument("--results", type=Path, help="write the results JSON here")
    serve_parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit when the run finishes (default: keep serving)",
    )
    serve_parser.add_argument(
        "--enrolment",
        choices=("key", "open"),
        default="key",
        help="key: clients join with an enrolment key (`fedgate keys create`); open: anyone "
        "may join (for trusted networks and demos only)",
    )
    add_dashboard_options(serve_parser)
    add_inference_options(serve_parser)
    add_server_tls_options(serve_parser)
    add_store_options(serve_parser)
    add_run_options(serve_parser)
    serve_parser.set_defaults(handler=run_serve, exit_at_once=True)


def add_dashboard_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dashboard")
    group.add_argument(
        "--public-dashboard",
        action="store_true",
        help="the dashboard's read-only views (status, runs, models) need no token; "
        "every action (pause, kick, config, deploy) still does",
    )
    group.add_argument(
        "--keep-serving",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --exit-when-done: after the run ends and its results are written, serve "
        "the dashboard and models this long before exiting",
    )


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inference")
    group.add_argument(
        "--public-predict",
        action="store_true",
        help="anyone may ask the deployed model for predictions (POST /api/v1/predict, gRPC "
        "Inference.Predict) without a token, rate-limited per address; --public-dashboard "
        "implies it",
    )


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store")
    group.add_argument(
        "--db",
        default="",
        help="where runs are kept: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
        "(default: the SQLite file runs/fedgate.db); an unfinished run there is resumed",
    )
    group.add_argument(
        "--new-run",
        action="store_true",
        help="start a new run even if the database holds an unfinished one (that one is "
        "marked stopped)",
    )


def run_serve(args: argparse.Namespace) -> int:
    from fedgate.core.evaluation_process import without_grpc_fork_handlers  # noqa: PLC0415

    without_grpc_fork_handlers()  # before gRPC loads: the server forks its evaluation worker
    # imported here: the server's web stack (FastAPI, uvicorn) is no client's business
    from fedgate.gateway.serve import ServeOptions, serve  # noqa: PLC0415
    from fedgate.gateway.server import GatewaySettings  # noqa: PLC0415
    from fedgate.store import DEFAULT_DB_URL  # noqa: PLC0415 - SQLAlchemy is no client's business

    if args.threads < 0:
        raise ConfigError(f"--threads must be 0 (torch's default) or more, not {args.threads}")
    if args.threads:
        import torch  # noqa: PLC0415 - the server imports it anyway; set before any work

        torch.set_num_threads(args.threads)  # every thread started after this one too
    settings = GatewaySettings(
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        max_update_bytes=max_update_bytes(args),
        upload_timeouts=upload_timeouts(args),
        tls=server_tls(args),
        **({"admin_token": args.admin_token} if args.admin_token else {}),
    )
    options = ServeOptions(
        gateway=settings,
        run=RunConfig(**settings_of(args)),
        dataset=args.dataset,
        model=args.model,
        ready_file=args.ready_file,
        results_file=args.results,
        exit_when_done=args.exit_when_done,
        enrolment=args.enrolment,
        max_concurrent_uploads=args.max_concurrent_uploads,
        join_limits=join_limits(args),
        db=args.db or DEFAULT_DB_URL,
        new_run=args.new_run,
        public_dashboard=args.public_dashboard,
        keep_serving_s=args.keep_serving,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        public_predict=args.public_predict,
        evaluate_in=args.evaluate_in,
    )
    status = asyncio.run(serve(options))
    print(f"run {status.run_id} {status.state.value} after {status.rounds_completed} rounds")
    return 0
