"""The `fedgate` command: serve | client | sim | train | experiment | demo | bench | report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgate.benchrun import add_bench_arguments, repository_root, run_bench
from fedgate.cli_access import add_access_commands
from fedgate.cli_config import add_config_options
from fedgate.cli_experiment import add_experiment_command
from fedgate.cli_limits import add_limit_options, join_limits, max_update_bytes, upload_timeouts
from fedgate.cli_store import add_store_commands
from fedgate.cli_tls import add_client_tls_options, add_server_tls_options, client_tls, server_tls
from fedgate.cli_train import add_data_dir_option, add_train_command
from fedgate.codecs import codec_names, get_codec
from fedgate.core.config import RunConfig, settings_of
from fedgate.core.messages import RoundRecord
from fedgate.engines import ENGINES
from fedgate.errors import FedgateError
from fedgate.launch import ServerProcess
from fedgate.results import write_json
from fedgate.runner import KEY_ENV, ClientOptions, run_client
from fedgate.simulation import DELTAS, MIXED, TRANSPORT_CHOICES, SimConfig, run_simulation
from fedgate.transport.connect import TRANSPORTS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
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


# the baseline, the design's codecs, and the smallest ones that keep accuracy
DEMO_CODECS = "json,raw,msgpack,bf16-zstd,int8-zstd,topk-int8"
DEMO_KEEP_SERVING_S = 600.0  # `fedgate demo --keep-serving` with no number
CODEC_HELP = f"{', '.join(codec_names())} (topk-int8:<fraction> sets the share of each delta kept)"


def codec_name(name: str) -> str:
    """argparse type: a codec the registry knows, parameters included (topk-int8:0.01)."""
    try:
        get_codec(name)
    except FedgateError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return name


def codec_choice(value: str) -> str:
    """argparse type for sim: a codec, a comma-separated list, or 'mixed'."""
    if value != MIXED:
        for name in value.split(","):
            codec_name(name)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--info", action="store_true", help="progress logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    add_serve_command(commands)
    add_client_command(commands)
    add_access_commands(commands)
    add_store_commands(commands)
    sim = commands.add_parser("sim", help="run a whole federation and write results JSON")
    add_sim_options(sim)
    sim.add_argument("--out", type=Path, help="write the results JSON here")
    sim.set_defaults(handler=run_sim)
    add_train_command(commands)
    add_experiment_command(commands)
    demo = commands.add_parser("demo", help="a federation on the embedded defaults")
    demo.add_argument("--out-dir", type=Path, default=Path("runs/demo"))
    demo.add_argument("--rounds", type=int, default=15)
    demo.add_argument("--clients", type=int, default=6)
    demo.add_argument(
        "--keep-serving",
        type=float,
        nargs="?",
        const=DEMO_KEEP_SERVING_S,
        default=0.0,
        metavar="SECONDS",
        help="leave the server (its dashboard, its models) up this long after the run "
        f"(default with the flag alone: {DEMO_KEEP_SERVING_S:g}; Ctrl-C ends it sooner)",
    )
    demo.set_defaults(handler=run_demo)
    bench = commands.add_parser("bench", help="run a bench suite, write results JSON")
    add_bench_arguments(bench)
    bench.set_defaults(handler=lambda args: run_bench(args, args.argv))
    report = commands.add_parser("report", help="render results JSON into a report")
    report.add_argument(
        "results",
        nargs="+",
        type=Path,
        help="results JSON from fedgate bench, or an experiment directory (fedgate experiment)",
    )
    report.add_argument(
        "--out",
        "--out-dir",
        dest="out_dir",
        type=Path,
        default=None,
        help="directory for report.md, report.html and the PNGs (default: the experiment "
        "directory, when that is all there is to report; else ./report)",
    )
    report.set_defaults(handler=run_report_command)
    return parser


def run_report_command(args: argparse.Namespace) -> int:
    from fedgate.report import run_report  # noqa: PLC0415 - matplotlib loads only when used

    return run_report(args)


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
    serve_parser.set_defaults(handler=run_serve)


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


def add_client_command(commands: Any) -> None:
    client = commands.add_parser("client", help="join a federation and train on local data")
    client.add_argument("--server", required=True, help="HOST:PORT (REST also takes a URL)")
    client.add_argument("--transport", required=True, choices=sorted(TRANSPORTS))
    client.add_argument("--codec", default="raw", type=codec_name, help=CODEC_HELP)
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
    client.set_defaults(handler=run_client_command)


def add_sim_options(parser: argparse.ArgumentParser) -> None:
    defaults = SimConfig()
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument(
        "--transport",
        default=defaults.transport,
        choices=TRANSPORT_CHOICES,
        help="inproc, or real server and client processes: grpc, rest, mixed",
    )
    parser.add_argument(
        "--codec",
        default=defaults.codec,
        type=codec_choice,
        help=f"{CODEC_HELP}; a comma-separated list that clients take in turn; or 'mixed' "
        "for every codec in turn",
    )
    parser.add_argument(
        "--partition",
        default=defaults.partition,
        help="iid | dirichlet:<alpha> | quantity:<alpha> | shards:<k>",
    )
    parser.add_argument("--dataset", default=defaults.dataset)
    parser.add_argument("--model", default=defaults.model)
    add_data_dir_option(parser)
    parser.add_argument(
        "--deltas",
        choices=sorted(DELTAS),
        default=defaults.deltas,
        help="send and receive model differences (auto: for lossy codecs)",
    )
    add_engine_options(parser, defaults)
    # every run setting, as serve spells it, with sim's defaults (SimConfig has them all)
    add_config_options(
        parser.add_argument_group("run"),
        defaults=dataclasses.asdict(defaults),
        helps={
            "min_clients": "clients needed to open and close a round (0: --clients-per-round "
            "if set, else every client)"
        },
    )


def add_engine_options(parser: argparse.ArgumentParser, defaults: SimConfig) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default=defaults.engine,
        help="local: a process per client (network transports) or this process (inproc); "
        "ray: virtual clients on a Ray cluster that hold a model only while they train "
        "(pip install 'fedgate[ray]')",
    )
    group.add_argument(
        "--ray-address",
        default=defaults.ray_address,
        metavar="ADDRESS",
        help="with --engine ray: the cluster to join (as ray.init takes it: HOST:PORT, "
        "auto, ray://...); default: start one on this machine for the run",
    )


def run_serve(args: argparse.Namespace) -> int:
    # imported here: the server's web stack (FastAPI, uvicorn) is no client's business
    from fedgate.gateway.serve import ServeOptions, serve  # noqa: PLC0415
    from fedgate.gateway.server import GatewaySettings  # noqa: PLC0415
    from fedgate.store import DEFAULT_DB_URL  # noqa: PLC0415 - SQLAlchemy is no client's business

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
    )
    status = asyncio.run(serve(options))
    print(f"run {status.run_id} {status.state.value} after {status.rounds_completed} rounds")
    return 0


def run_client_command(args: argparse.Namespace) -> int:
    options = ClientOptions(
        server=args.server,
        transport=args.transport,
        codec=args.codec,
        index=args.index,
        of=args.of,
        dataset=args.dataset,
        model=args.model,
        partition=args.partition,
        seed=args.seed,
        name=args.name,
        threads=args.threads,
        deltas=DELTAS[args.deltas],
        tls=client_tls(args),
        key=args.key,
        give_up_after_s=args.give_up_after or None,
        data_dir=Path(args.data_dir) if args.data_dir else None,
    )
    report = asyncio.run(run_client(options))
    print(
        f"{report.client_id}: {len(report.rounds)} rounds sent, {len(report.dropped)} tasks "
        f"dropped, {report.rejoins} rejoins; {report.ended or 'interrupted'}"
    )
    return 0


def sim_config(args: argparse.Namespace) -> SimConfig:
    names = [field.name for field in dataclasses.fields(SimConfig)]
    return SimConfig(**{name: getattr(args, name) for name in names})


def run_sim(args: argparse.Namespace) -> int:
    config = sim_config(args)
    results = run_simulation(config, on_round=progress_printer(config.rounds))
    print_summary(results)
    if args.out:
        write_json(args.out, results)
        print(f"results: {args.out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    config = SimConfig(
        clients=args.clients,
        rounds=args.rounds,
        transport=MIXED,
        codec=DEMO_CODECS,
        partition="dirichlet:0.5",
    )
    keep_serving: float = args.keep_serving

    def introduce(server: ServerProcess) -> None:
        # the dashboard first: a newcomer opens it while the run is young
        print(f"dashboard  {server.http_url}/  (operator token {server.admin_token})", flush=True)
        print(
            f"fedgate demo: a real server and {config.clients} client processes on loopback, "
            f"digits split {config.partition}"
        )
        for i in range(config.clients):
            print(f"  client-{i}: {config.transport_for(i):<4} {config.codec_for(i)}")
        show_server(server)

    def conclude(results: dict[str, Any]) -> None:
        print_summary(results)
        out = args.out_dir / "results.json"
        write_json(out, results)
        print(f"results: {out.resolve()}")
        print(comparison_report_hint(), flush=True)
        if keep_serving > 0:
            print(f"the server stays up {keep_serving:g} s more for the dashboard; Ctrl-C ends it")

    run_simulation(
        config,
        on_round=progress_printer(config.rounds),
        on_server=introduce,
        keep_serving_s=keep_serving,
        on_results=conclude,
        # on loopback: a newcomer reads the dashboard without pasting the token
        serve_args=("--public-dashboard",),
    )
    return 0


def comparison_report_hint() -> str:
    """Where the newest committed bench report is, and how to make one on this machine."""
    reports = sorted((repository_root() / "bench" / "reports").glob("*/report.html"))
    made_here = "`make bench` measures this machine into runs/bench/report/report.html"
    if not reports:
        return f"comparison report: {made_here}"
    return f"comparison report (codecs, transports, rounds, Flower): {reports[-1]}\n  {made_here}"


def show_server(server: ServerProcess) -> None:
    token = f"Authorization: Bearer {server.admin_token}"
    print(f"server (run {server.run_id}), while the run lasts:")
    print(f"  REST API docs  {server.http_url}/docs")
    print(f"  live status    curl -H '{token}' {server.http_url}/api/v1/status")
    print(f"  status stream  curl -N -H '{token}' {server.http_url}/api/v1/status/watch")
    print(f"  gRPC           {server.address('grpc')}  (fedgate.v1.Federation, .Operator)")
    keys = f"fedgate keys list --server {server.http_url} --token {server.admin_token}"
    print(f"  enrolment keys {keys}")


def progress_printer(rounds: int) -> Any:
    def show(record: RoundRecord) -> None:
        if record.outcome != "completed":
            print(f"round {record.round:>3}: {record.outcome} (attempt {record.attempt})")
            return
        print(
            f"round {record.round:>3}/{rounds}  accuracy {record.accuracy:.4f}  "
            f"loss {record.loss:.4f}  clients {len(record.participants)}  "
            f"up {_mb(record.bytes_up)}  down {_mb(record.bytes_down)}  "
            f"{record.duration_s:.2f}s",
            flush=True,
        )

    return show


def print_summary(results: dict[str, Any]) -> None:
    accuracy = results["final_accuracy"]
    shown = f"{accuracy:.4f}" if accuracy is not None else "n/a"
    print(
        f"final accuracy {shown}  bytes up {_mb(results['bytes_up'])}  "
        f"down {_mb(results['bytes_down'])}  in {results['duration_s']:.1f}s"
    )
    for kind in ("bytes_by_transport", "bytes_by_codec"):
        for key, traffic in results[kind].items():
            print(f"  {key:<12} up {_mb(traffic['up'])}  down {_mb(traffic['down'])}")


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


if __name__ == "__main__":
    sys.exit(main())
