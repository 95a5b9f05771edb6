"""`fedgate sim` and `fedgate demo`: their options here; the simulation (torch, the core,
the launcher) is imported only when one runs."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgate.cli_bench import checkout_root
from fedgate.cli_config import add_config_options
from fedgate.cli_train import add_data_dir_option
from fedgate.cli_types import CODEC_HELP, codec_name
from fedgate.core.messages import RoundRecord
from fedgate.run.client_options import DELTAS
from fedgate.run.engines import ENGINES
from fedgate.run.results import write_json
from fedgate.run.sim_config import CLIENT_STARTS, MIXED, TRANSPORT_CHOICES, SimConfig

if TYPE_CHECKING:
    from fedgate.run.launch import ServerProcess

# the baseline, the design's codecs, and the smallest ones that keep accuracy
DEMO_CODECS = "json,raw,msgpack,bf16-zstd,int8-zstd,topk-int8"
DEMO_KEEP_SERVING_S = 600.0  # `fedgate demo --keep-serving` with no number


def codec_choice(value: str) -> str:
    """argparse type for sim: a codec, a comma-separated list, or 'mixed'."""
    if value != MIXED:
        for name in value.split(","):
            codec_name(name)
    return value


def add_sim_command(commands: Any) -> None:
    sim = commands.add_parser("sim", help="run a whole federation and write results JSON")
    add_sim_options(sim)
    sim.add_argument("--out", type=Path, help="write the results JSON here")
    sim.set_defaults(handler=run_sim)


def add_demo_command(commands: Any) -> None:
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
    group.add_argument(
        "--client-start",
        choices=CLIENT_STARTS,
        default=defaults.client_start,
        help="local engine, network transports: fork each client process from a server "
        "that has imported torch and the client once (fast), or exec `python -m fedgate "
        "client` for each (as a client owner runs it)",
    )


def sim_config(args: argparse.Namespace) -> SimConfig:
    names = [field.name for field in dataclasses.fields(SimConfig)]
    return SimConfig(**{name: getattr(args, name) for name in names})


def run_sim(args: argparse.Namespace) -> int:
    from fedgate.run.simulation import run_simulation  # noqa: PLC0415 - torch loads here

    config = sim_config(args)
    results = run_simulation(config, on_round=progress_printer(config.rounds))
    print_summary(results)
    if args.out:
        write_json(args.out, results)
        print(f"results: {args.out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from fedgate.run.simulation import run_simulation  # noqa: PLC0415 - torch loads here

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
    """Where the newest committed full bench report is (one with every suite, the codecs'
    among them: not an experiment's or a single suite's), and how to make one here."""
    full = sorted((checkout_root() / "bench" / "reports").glob("*/results/codecs.json"))
    reports = [html for html in (p.parent.parent / "report.html" for p in full) if html.exists()]
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
