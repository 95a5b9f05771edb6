"""CPU a round costs, server and clients: fedgate against Flower's legacy run (issue 12).

At ten client processes on two cores a round is bound by CPU, so what each side spends
per round is the gap to look at (bench/README.md, "CPU a round costs"). Each framework
runs the flower suite's own federation (`test_flower.FedgateFederation`,
`flower_side.FlowerFederation`: digits CNN, ``dirichlet:0.5``, raw, one process per
client) for `SHORT` and for `LONG` rounds; the difference of the two, over
``LONG - SHORT``, is one round's CPU with start-up cancelled out.

- clients: the CPU of the reaped child processes (``RUSAGE_CHILDREN``): every client, and
  for Flower its server too, which is then taken out;
- fedgate's server: the bench server (a real gateway, warmed up once), which lives on, read
  from ``/proc`` before and after;
- Flower's server: read from ``/proc`` every `SAMPLE_S` until it exits (its last
  milliseconds may be missed; they fall in both runs alike).

Run from the checkout (Flower's side needs ``make flower-env``)::

    .venv/bin/python bench/cpu_per_round.py --clients 10 [--transport rest] [--repeat 2]
        [--no-flower]  (fedgate alone: A/B runs of a change)
        [--short 5 --long 35]  (defaults 3 and 13; 35 minus 5 is steadier, and longer)
        [--server-threads 2]  (the bench server's torch threads; default 1, as sim's)
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchkit import BenchServer, EventLoop
from federations import FederationSpec, warm_up
from flower_side import FlowerFederation, flower_unavailable, flower_venv, write_inputs
from test_flower import PARTITION, FedgateFederation

from fedgate.core.data import Dataset, load_dataset

SHORT, LONG = 3, 13
SAMPLE_S = 0.01
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Spent:
    """One whole federation: wall time and CPU seconds."""

    wall_s: float
    server_s: float
    clients_s: float


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of a live (or not yet reaped) process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LastReading:
    """A process's CPU seconds, read until it is gone; the last reading is kept."""

    def __init__(self, pid: int) -> None:
        self.pid, self.value = pid, 0.0
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while True:
            try:
                self.value = process_cpu_s(self.pid)
            except (OSError, IndexError):
                return
            time.sleep(SAMPLE_S)

    def result(self) -> float:
        self._thread.join()
        return self.value


def fedgate_spent(server: BenchServer, spec: FederationSpec, workdir: Path) -> Spent:
    federation = FedgateFederation(server, spec, workdir)
    federation.start()
    pid = server.process.pid
    server_before, children_before = process_cpu_s(pid), children_cpu_s()
    started = time.perf_counter()
    try:
        federation.run()
    finally:
        federation.abort()
    wall = time.perf_counter() - started
    return Spent(wall, process_cpu_s(pid) - server_before, children_cpu_s() - children_before)


def flower_spent(spec: FederationSpec, dataset: Dataset, workdir: Path) -> Spent:
    inputs = workdir / "flower-inputs"
    write_inputs(spec, dataset, inputs)
    federation = FlowerFederation(flower_venv(), inputs, workdir, spec.clients)
    children_before = children_cpu_s()
    federation.start()  # the server's start-up is in both runs alike
    server = LastReading(federation.processes.running["flower-server"].pid)
    started = time.perf_counter()
    try:
        federation.run()
    finally:
        federation.abort()  # every process waited for: all of them in RUSAGE_CHILDREN
    wall = time.perf_counter() - started
    server_s = server.result()
    return Spent(wall, server_s, children_cpu_s() - children_before - server_s)


def per_round(short: Spent, long: Spent, rounds: int) -> str:
    """One round's share of what ``long`` spent beyond ``short``, ``rounds`` rounds longer."""

    def ms(a: float, b: float) -> str:
        return f"{1000 * (b - a) / rounds:6.1f} ms"

    return (
        f"server {ms(short.server_s, long.server_s)}, "
        f"clients {ms(short.clients_s, long.clients_s)}, "
        f"wall {ms(short.wall_s, long.wall_s)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--transport", default="grpc", choices=("grpc", "rest"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--short", type=int, default=SHORT, help="rounds of the short run")
    parser.add_argument("--long", type=int, default=LONG, help="rounds of the long run")
    parser.add_argument(
        "--server-threads", type=int, default=1, help="fedgate server's torch threads"
    )
    parser.add_argument("--no-flower", action="store_true", help="fedgate alone (A/B runs)")
    args = parser.parse_args()
    if not 0 < args.short < args.long:
        parser.error("--short and --long: 0 < short < long rounds")
    dataset = load_dataset("digits", 0)
    no_flower = "not asked for" if args.no_flower else flower_unavailable(flower_venv())
    if no_flower is not None:
        print(f"Flower skipped: {no_flower}" + ("" if args.no_flower else " (make flower-env)"))
    with tempfile.TemporaryDirectory(prefix="fedgate-cpu-") as tmp:
        server = BenchServer(Path(tmp) / "server.log", threads=args.server_threads)
        try:
            loop = EventLoop()
            try:
                warm_up(server, loop, dataset, (args.transport,))
            finally:
                loop.close()
            for _ in range(args.repeat):
                spent: dict[str, list[Spent]] = {"flower": [], "fedgate": []}
                for rounds in (args.short, args.long):
                    spec = FederationSpec(
                        args.transport, "raw", args.clients, rounds, partition=PARTITION
                    )
                    workdir = Path(tempfile.mkdtemp(dir=tmp))
                    spent["fedgate"].append(fedgate_spent(server, spec, workdir))
                    if no_flower is None:
                        spent["flower"].append(flower_spent(spec, dataset, workdir))
                for framework, (short, long) in ((k, v) for k, v in spent.items() if v):
                    where = (
                        f"{framework} ({args.transport})" if framework == "fedgate" else framework
                    )
                    spent_per_round = per_round(short, long, args.long - args.short)
                    print(f"{where}, {args.clients} clients, per round: {spent_per_round}")
        finally:
            server.close()


if __name__ == "__main__":
    main()
