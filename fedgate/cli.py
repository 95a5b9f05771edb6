"""The `fedgate` command: sim | demo (serve, client, bench and report join as they land)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgate.codecs import codec_names
from fedgate.core.messages import RoundRecord
from fedgate.errors import FedgateError
from fedgate.simulation import MIXED, SimConfig, simulate


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    sim = commands.add_parser("sim", help="run a whole federation and write results JSON")
    add_sim_options(sim)
    sim.add_argument("--out", type=Path, help="write the results JSON here")
    sim.set_defaults(handler=run_sim)
    demo = commands.add_parser("demo", help="a federation on the embedded defaults")
    demo.add_argument("--out-dir", type=Path, default=Path("runs/demo"))
    demo.add_argument("--rounds", type=int, default=15)
    demo.set_defaults(handler=run_demo)
    return parser


def add_sim_options(parser: argparse.ArgumentParser) -> None:
    defaults = SimConfig()
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--transport", default=defaults.transport, choices=["inproc"])
    parser.add_argument(
        "--codec",
        default=defaults.codec,
        choices=[*codec_names(), MIXED],
        help="payload codec for every client, or 'mixed' to give clients codecs in turn",
    )
    parser.add_argument(
        "--partition",
        default=defaults.partition,
        help="iid | dirichlet:<alpha> | quantity:<alpha> | shards:<k>",
    )
    parser.add_argument("--dataset", default=defaults.dataset)
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, dest="learning_rate")
    parser.add_argument("--local-epochs", type=int, default=defaults.local_epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--clients-per-round", type=int, default=defaults.clients_per_round)


def sim_config(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        clients=args.clients,
        rounds=args.rounds,
        transport=args.transport,
        codec=args.codec,
        partition=args.partition,
        dataset=args.dataset,
        model=args.model,
        seed=args.seed,
        learning_rate=args.learning_rate,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        clients_per_round=args.clients_per_round,
    )


def run_sim(args: argparse.Namespace) -> int:
    config = sim_config(args)
    results = asyncio.run(simulate(config, on_round=progress_printer(config.rounds)))
    print_summary(results)
    if args.out:
        write_json(args.out, results)
        print(f"results: {args.out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    config = SimConfig(clients=5, rounds=args.rounds, codec=MIXED, partition="dirichlet:0.5")
    print(
        f"fedgate demo: {config.clients} clients on digits ({config.partition}), "
        f"codecs {', '.join(config.codec_for(i) for i in range(config.clients))}"
    )
    results = asyncio.run(simulate(config, on_round=progress_printer(config.rounds)))
    print_summary(results)
    out = args.out_dir / "results.json"
    write_json(out, results)
    print(f"results: {out.resolve()}")
    return 0


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
    for codec, traffic in results["bytes_by_codec"].items():
        print(f"  {codec:<12} up {_mb(traffic['up'])}  down {_mb(traffic['down'])}")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


if __name__ == "__main__":
    sys.exit(main())
