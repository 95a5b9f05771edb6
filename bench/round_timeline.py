"""Where a round's wall time goes: every step of every process, on one clock (issue 12).

Runs the flower suite's fedgate federation (`test_flower.FedgateFederation`: digits CNN,
``dirichlet:0.5``, raw, one ``fedgate client`` process each, the bench server) with
`timeline_probe` as the ``sitecustomize`` of the server and every client, then prints, as
the median over rounds (the first `WARM_UP` left out) of each step's offset from its
round's opening:

- the server's steps, in order (the n-th hand-out, fold, ... of a round: ``S.finish#3``);
- the clients' steps, the client that got its task first on the first line: when it got
  its task, decoded, trained, encoded and sent its update.

Run from the checkout::

    .venv/bin/python bench/round_timeline.py --clients 10 [--transport rest] [--rounds 30]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from benchkit import BenchServer, EventLoop
from federations import FederationSpec, warm_up
from test_flower import PARTITION, FedgateFederation
from timeline_probe import DIR_ENV

from fedgate.core.data import load_dataset

WARM_UP = 3  # first rounds left out: processes still warming up (allocators, caches)
BENCH = Path(__file__).resolve().parent
Events = list[tuple[float, str]]


def run_traced(transport: str, clients: int, rounds: int, logs: Path) -> None:
    """One federation, its processes started with the probe as their sitecustomize."""
    probe = logs / "probe"
    probe.mkdir()
    shutil.copy(BENCH / "timeline_probe.py", probe / "sitecustomize.py")
    os.environ[DIR_ENV] = str(logs)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(probe), os.environ.get("PYTHONPATH", "")])
    )
    dataset = load_dataset("digits", 0)
    server = BenchServer(logs / "server.out")
    try:
        loop = EventLoop()
        try:
            warm_up(server, loop, dataset, (transport,))
        finally:
            loop.close()
        spec = FederationSpec(transport, "raw", clients, rounds, partition=PARTITION)
        federation = FedgateFederation(server, spec, Path(tempfile.mkdtemp(dir=logs)))
        federation.start()
        try:
            federation.run()
        finally:
            federation.abort()
    finally:
        server.close()


def read_logs(logs: Path) -> dict[str, Events]:
    events: dict[str, Events] = {}
    for path in logs.glob("*.log"):
        lines = (line.split(" ", 1) for line in path.read_text().splitlines() if line)
        events[path.stem] = [(float(t), event) for t, event in lines]
    return events


def server_steps(events: Events, opens: list[float]) -> list[tuple[float, str]]:
    """Median offset of each server step (numbered within its round) from the opening."""
    offsets: dict[str, list[float]] = collections.defaultdict(list)
    for start, end in zip(opens[WARM_UP:], opens[WARM_UP + 1 :], strict=False):
        seen: collections.Counter[str] = collections.Counter()
        for t, event in events:
            if start <= t < end:
                seen[event] += 1
                offsets[f"{event}#{seen[event]}"].append(1000 * (t - start))
    rounds = len(opens) - WARM_UP - 1
    common = {k: v for k, v in offsets.items() if len(v) * 2 >= rounds}  # most rounds have it
    return sorted((statistics.median(v), k) for k, v in common.items())


def client_steps(clients: list[Events], opens: list[float]) -> list[list[tuple[float, str]]]:
    """Per rank of getting the round's task: median offset of each of that client's steps."""
    offsets: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
    for start, end in zip(opens[WARM_UP:], opens[WARM_UP + 1 :], strict=False):
        firsts = []
        for events in clients:
            first: dict[str, float] = {}
            for t, event in events:
                if start <= t < end:
                    first.setdefault(event, 1000 * (t - start))
            if "C.task:e" in first:
                firsts.append(first)
        for rank, first in enumerate(sorted(firsts, key=lambda f: f["C.task:e"])):
            for event, offset in first.items():
                offsets[rank, event].append(offset)
    ranks = sorted({rank for rank, _ in offsets})
    return [
        sorted((statistics.median(v), event) for (r, event), v in offsets.items() if r == rank)
        for rank in ranks
    ]


def report(events: dict[str, Events]) -> None:
    missing = sorted({e for log in events.values() for _, e in log if e.startswith("missing")})
    for line in missing:
        print(f"probe: {line} (renamed? update timeline_probe.STEPS)")
    server = next(log for log in events.values() if any(e == "S.open:s" for _, e in log))
    opens = [t for t, event in server if event == "S.open:s"]
    rounds = [1000 * (b - a) for a, b in zip(opens[WARM_UP:], opens[WARM_UP + 1 :], strict=False)]
    print(f"{len(rounds)} rounds, median open to open {statistics.median(rounds):.1f} ms")
    print("server (ms after the round opened):")
    for offset, step in server_steps(server, opens):
        print(f"  {offset:7.1f}  {step}")
    clients = [log for log in events.values() if any(e == "C.train:s" for _, e in log)]
    print("clients, in the order they got their task (ms after the round opened):")
    for rank, steps in enumerate(client_steps(clients, opens)):
        print(f"  {rank:2d}  " + "  ".join(f"{event} {offset:.1f}" for offset, event in steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--transport", default="grpc", choices=("grpc", "rest"))
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedgate-timeline-") as tmp:
        run_traced(args.transport, args.clients, args.rounds, Path(tmp))
        report(read_logs(Path(tmp)))


if __name__ == "__main__":
    main()
