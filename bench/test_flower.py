"""Flower suite: one federation run by Flower (both ways Flower runs) and by fedgate
(gRPC, REST), side by side, in one run, at 4 and at 10 clients.

The same model (digits CNN, the initial weights fedgate's server builds with seed 0),
data (digits, the same seeded train/test split), partition (``dirichlet:0.5``, seed 0,
client i taking part i as ``fedgate client --index i`` does), trainer recipe (SGD with
momentum 0.9, lr 0.1, 1 epoch, batch 32, the same per-client batch-order seeds, one torch
thread per client), client count (4 and 10; ``--fedgate-quick``: 4, without the REST run)
and rounds (20, Flower's deployment 10; quick: 3), every client in every round, FedAvg
weighted by examples, the server evaluating the new model on the held-out split after
each round.

Both frameworks run as a server process and one process per client, on loopback:

- Flower, under ``.venv-flower``'s Python (``make flower-env``; `flower_side.py`,
  ``flower/``), two ways (the row's ``mode``):
  ``legacy``: ``flwr.server.start_server`` and ``flwr.client.start_client`` (gRPC,
  ``grpc-bidi``); ``deployment``: ``flower-superlink``, one ``flower-supernode`` per client
  and ``flwr run`` of the Flower App in ``flower/`` (insecure, loopback; the SuperNodes
  reach the SuperLink's Fleet API over HTTP), as Flower 1.x is deployed. Both run the
  same client and strategy (``flower/flower_app.py``). Where the virtualenv is missing
  (or ``$FEDGATE_FLOWER_VENV`` points elsewhere) or cannot import flwr, Flower's
  benchmarks are skipped with a message naming ``make flower-env``, and fedgate's still
  run.
- fedgate: the bench server process (a real Gateway, with one torch thread as ``fedgate
  sim`` runs its server; warmed up once, untimed) and
  ``fedgate client --threads 1 --codec raw --deltas auto`` processes (no deltas for raw);
  ``raw`` is the codec closest to Flower's ``np.save`` buffers, so bytes compare like for
  like. One more fedgate run, over gRPC with ``int8-zstd`` (model deltas both ways, the
  codec's default), shows what fedgate's codecs save on the same federation.

pytest-benchmark times one whole federation as its one round. fedgate and legacy Flower:
from starting the client processes to every process having exited and the results being
read (client start-up, a few seconds of importing torch apiece, included); the server is
started before it, untimed. Flower's deployment: from ``flwr run`` to the ServerApp's
round log written and its task finished; the SuperLink and SuperNodes are started before
it, untimed (they are long-lived; the ClientApp processes they start per message are in
it). Per-round figures come from each server's own record: a round runs from the server
handing out the round's work (instructions built; the clients connected) to the point
after which the next round opens, i.e. each framework's round cadence. For Flower that is
the aggregated model evaluated (its evaluation is on its round loop); fedgate evaluates in
the background while the next round runs, so its round ends with the model published
(the next round opens a fraction of a millisecond later: 0.2 ms median at 10 clients, by
a probe of the server's events), and the evaluation's CPU falls in the next round.

The runs compared round for round (Flower legacy, fedgate raw over gRPC and over REST) run
`REPEATS` times per client count, interleaved and rotated (Flower, gRPC, REST; then gRPC,
REST, Flower; ...), a row each; the report pools a run's rows into one, the median over
all their rounds (``fedgate.report.repeats``). The rest run once.

Row fields (``suite="flower"``): ``framework``, ``mode`` (Flower's rows: ``legacy`` or
``deployment``), ``transport``, ``payload``, ``partition``, ``clients``, ``rounds``,
``repeat`` (which run of the same federation this row is, from 1) and ``repeats``,
``runtime`` (framework and torch versions); ``round_wall_s`` (median round),
``round_wall_mean_s`` / ``_min_s`` / ``_max_s`` / ``_stddev_s`` / ``_rounds``,
``round_latencies_s`` (every round); ``bytes_per_round`` (payload bytes both ways, mean
over rounds), ``bytes_up_per_round``, ``bytes_down_per_round``; ``accuracy`` (after the
last round), ``accuracy_per_round``; ``federation_s`` (the timed call).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from benchkit import BenchServer, EventLoop, Hosted
from federations import FederationSpec, warm_up
from flower_side import (
    DEPLOYMENT,
    LEGACY,
    FlowerDeployment,
    FlowerFederation,
    Processes,
    flower_unavailable,
    flower_venv,
    skip_message,
    write_inputs,
)

import fedgate
from fedgate.core.data import Dataset, load_dataset
from fedgate.run.launch import fedgate_command

CLIENTS = {False: (4, 10), True: (4,)}
# 20 rounds: a median of 10 moved by several ms from run to run on a 2-core machine
# whose rounds vary by ±10 ms. Flower's deployment keeps 10: its rounds take seconds each.
ROUNDS = {False: 20, True: 3}
DEPLOYMENT_ROUNDS = {False: 10, True: 3}
PARTITION = "dirichlet:0.5"
FLOWER_PAYLOAD = "np.save buffers"
# (framework, mode, transport, codec): Flower's two ways of running (its payload is its own:
# np.save buffers), over its own transports; fedgate's raw is closest to Flower's payload.
RUNS = [
    ("flower", LEGACY, "grpc", "raw"),  # start_server / start_client: grpc-bidi
    ("flower", DEPLOYMENT, "http", "raw"),  # SuperLink / SuperNodes: Fleet API over HTTP
    ("fedgate", None, "grpc", "raw"),
    ("fedgate", None, "rest", "raw"),
    ("fedgate", None, "grpc", "int8-zstd"),
]
# --fedgate-quick leaves out fedgate over REST (the rounds suite runs it) to stay within a
# minute or so a run: each run here starts its own processes, seconds of torch import apiece.
QUICK_RUNS = [run for run in RUNS if run[2] != "rest"]
# The runs compared round for round (Flower's legacy gRPC against fedgate's raw over gRPC
# and REST) run this many times, interleaved and each time in another order, and the
# report pools their rounds: one run each, in a fixed order, let the machine's drift over
# a minute (10-25 % here) fall on whichever ran last. The others run once.
REPEATS = {False: 3, True: 1}
COMPARED = [RUNS[0], RUNS[2], RUNS[3]]


def cases(quick: bool) -> list[tuple[Any, ...]]:
    """(framework, mode, transport, codec, clients, repeat) in the order they run: per
    client count, the compared runs in turns, rotated each turn, then the rest once."""
    runs = QUICK_RUNS if quick else RUNS
    compared = [run for run in COMPARED if run in runs]
    out: list[tuple[Any, ...]] = []
    for clients in CLIENTS[quick]:
        for repeat in range(REPEATS[quick]):
            turn = compared[repeat % len(compared) :] + compared[: repeat % len(compared)]
            out += [(*run, clients, repeat + 1) for run in turn]
        out += [(*run, clients, 1) for run in runs if run not in compared]
    return out


pytestmark = pytest.mark.timeout(3600)


@dataclass(frozen=True)
class Measured:
    """One round, as its server recorded it."""

    wall_s: float
    bytes_up: int
    bytes_down: int
    accuracy: float


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", 0)


@pytest.fixture(scope="module")
def warmed(bench_server: BenchServer, digits: Dataset) -> None:
    """The bench server's first connection and evaluation per transport, paid untimed.
    Flower's server is fresh per run; its evaluation of the initial model warms it."""
    loop = EventLoop()
    try:
        warm_up(bench_server, loop, digits, ("grpc", "rest"))
    finally:
        loop.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ == "test_flower_vs_fedgate":
        quick = bool(metafunc.config.getoption("fedgate_quick"))
        ordered = cases(quick)
        ids = ["-".join(str(part) for part in case[:-1] if part is not None) for case in ordered]
        ids = [f"{name}-run{case[-1]}" for name, case in zip(ids, ordered, strict=True)]
        names = ("framework", "mode", "transport", "codec", "clients", "repeat")
        metafunc.parametrize(names, ordered, ids=ids)


def figures(rounds: list[Measured]) -> dict[str, Any]:
    walls = [r.wall_s for r in rounds]
    accuracy = [r.accuracy for r in rounds]
    return {
        "round_wall_s": statistics.median(walls),
        "round_wall_mean_s": statistics.fmean(walls),
        "round_wall_min_s": min(walls),
        "round_wall_max_s": max(walls),
        "round_wall_stddev_s": statistics.stdev(walls) if len(walls) > 1 else 0.0,
        "round_wall_rounds": len(walls),
        "round_latencies_s": walls,
        "bytes_per_round": statistics.fmean(r.bytes_up + r.bytes_down for r in rounds),
        "bytes_up_per_round": statistics.fmean(r.bytes_up for r in rounds),
        "bytes_down_per_round": statistics.fmean(r.bytes_down for r in rounds),
        "accuracy": accuracy[-1],
        "accuracy_per_round": accuracy,
    }


def measure_flower(
    benchmark: Any, spec: FederationSpec, dataset: Dataset, workdir: Path, mode: str
) -> tuple[list[Measured], str]:
    """Flower's federation run in ``mode``, timed whole; its rounds as its strategy logged
    them."""
    venv = flower_venv()
    reason = flower_unavailable(venv)
    if reason is not None:
        pytest.skip(skip_message(reason))
    inputs = workdir / "flower-inputs"
    write_inputs(spec, dataset, inputs)
    kind = FlowerDeployment if mode == DEPLOYMENT else FlowerFederation
    federation = kind(venv, inputs, workdir, spec.clients)
    try:
        log = benchmark.pedantic(federation.run, setup=federation.start, rounds=1, iterations=1)
    finally:
        federation.abort()  # what still runs: all of a deployment, nothing of a legacy run
    rounds = log["rounds"]
    assert len(rounds) == spec.rounds, f"Flower ran {len(rounds)} of {spec.rounds} rounds"
    for entry in rounds:
        assert (entry["results"], entry["failures"]) == (spec.clients, 0), entry
    versions = log["versions"]
    runtime = f"flwr {versions['flwr']} · torch {versions['torch']}"
    return [
        Measured(r["duration_s"], r["bytes_up"], r["bytes_down"], r["accuracy"]) for r in rounds
    ], runtime


class FedgateFederation:
    """A federation hosted by the bench server, with one ``fedgate client`` process each."""

    def __init__(self, server: BenchServer, spec: FederationSpec, workdir: Path) -> None:
        self.server, self.spec = server, spec
        self.processes = Processes(workdir)
        self.hosted: Hosted | None = None

    def start(self) -> None:
        spec = self.spec
        self.hosted = self.server.start(spec.model, spec.run_config(), dataset=spec.dataset)

    def run(self) -> dict[str, Any]:
        assert self.hosted is not None
        for index in range(self.spec.clients):
            self.processes.spawn(f"fedgate-client-{index}", self.client_argv(self.hosted, index))
        self.processes.wait_all()
        results, self.hosted = self.server.stop(), None
        return results

    def client_argv(self, hosted: Hosted, index: int) -> list[str]:
        spec = self.spec
        return fedgate_command(
            "client",
            *("--server", hosted.address(spec.transport), "--transport", spec.transport),
            *("--codec", spec.codec, "--deltas", "auto", "--threads", "1"),
            *("--dataset", spec.dataset, "--model", spec.model, "--seed", str(spec.seed)),
            *("--partition", spec.partition, "--index", str(index), "--of", str(spec.clients)),
        )

    def abort(self) -> None:
        self.processes.kill_all()
        if self.hosted is not None:
            self.hosted = None
            self.server.stop()


def measure_fedgate(
    benchmark: Any, server: BenchServer, spec: FederationSpec, workdir: Path
) -> tuple[list[Measured], str]:
    """fedgate's federation, timed whole; its rounds as fedgate's server recorded them."""
    federation = FedgateFederation(server, spec, workdir)
    try:
        results = benchmark.pedantic(federation.run, setup=federation.start, rounds=1, iterations=1)
    finally:
        federation.abort()
    rounds = results["rounds"]
    assert len(rounds) == spec.rounds and not results["attempts"], "fedgate retried rounds"
    assert all(r["participants"] == spec.clients for r in rounds)
    runtime = f"fedgate {fedgate.__version__} · torch {results['machine']['torch']}"
    return [
        Measured(r["duration_s"], r["bytes_up"], r["bytes_down"], r["accuracy"]) for r in rounds
    ], runtime


def test_flower_vs_fedgate(
    benchmark: Any,
    bench_server: BenchServer,
    digits: Dataset,
    tmp_path: Path,
    framework: str,
    mode: str | None,
    transport: str,
    codec: str,
    clients: int,
    repeat: int,
    quick: bool,
    warmed: None,
) -> None:
    rounds_of = DEPLOYMENT_ROUNDS if mode == DEPLOYMENT else ROUNDS
    spec = FederationSpec(transport, codec, clients, rounds_of[quick], partition=PARTITION)
    benchmark.group = "flower vs fedgate"
    if framework == "flower":
        assert mode is not None
        rounds, runtime = measure_flower(benchmark, spec, digits, tmp_path, mode)
    else:
        rounds, runtime = measure_fedgate(benchmark, bench_server, spec, tmp_path)
    benchmark.extra_info.update(
        framework=framework,
        **({} if mode is None else {"mode": mode}),
        transport=transport,
        payload=codec if framework == "fedgate" else FLOWER_PAYLOAD,
        partition=spec.partition,
        clients=spec.clients,
        rounds=spec.rounds,
        repeat=repeat,
        repeats=REPEATS[quick] if (framework, mode, transport, codec) in COMPARED else 1,
        runtime=runtime,
        timing="federation",
        **figures(rounds),
    )
