"""Rounds suite: whole federations per transport x codec x client count, every round timed.

Each benchmark is one federation (`federations.py`): the digits CNN, an iid split over
1, 4 or 16 clients (``--fedgate-quick``: 2 clients), every client in every round, a fixed
number of rounds, all clients on one transport and one codec (every codec in the
registry). The server runs in the bench server process, the clients here over real
gRPC / REST connections on loopback.

pytest-benchmark times each federated round (one benchmark round = one federated
round): from the moment the first client receives round n's task to the moment the first
client receives round n+1's (or, after the last round, the stop). The round thus
includes the model fetch (the server encodes each version once per codec), decode,
local training, encode, upload, the server's decode, check and fold, aggregation,
publishing, and the server's evaluation on the held-out test split (fedgate evaluates
after every round).

Row fields (``suite="rounds"``):

- ``round_latency_s``: median round wall time (pytest-benchmark; also ``_mean_s``,
  ``_min_s``, ``_max_s``, ``_stddev_s``, ``round_latency_rounds``);
  ``round_latencies_s``: each round's;
- ``overhead_s``: median over rounds of (round wall time - the local training time of the
  slowest client in that round), i.e. everything in a round that is not waiting for the
  last client's training: transfers, codec work on both sides, server validation,
  aggregation, evaluation and task hand-out. The training time is measured client-side
  around `LocalTrainer.train` (the client reports only its loss); with many clients on
  2 cores, trainings overlap and share the CPU, and the slowest one's wall time includes
  that sharing. ``train_s``: median slowest training; ``round_overheads_s``,
  ``round_trainings_s``: per round;
- ``server_round_s``: median of the server's own record of each round (open -> closed
  after evaluation), a cross-check of the harness;
- ``bytes_per_round``: mean encoded payload bytes per round, models down plus updates up
  (the server's traffic counters); ``bytes_up_per_round``, ``bytes_down_per_round``;
- ``accuracy``: held-out accuracy after the last round; ``accuracy_per_round``.

``test_store_overhead`` (``benchmark.group = "store"``) runs one more federation per run
store the bench server offers, all else equal: 4 clients (quick too), gRPC, raw codec,
``ROUNDS`` rounds; its rows carry ``store`` (``memory``: the default in-memory store;
``sqlite``: a fresh SQLite file, WAL, written as ``fedgate serve --db`` writes it) and
the fields above. The scheduler awaits each round's commit before it opens the next
round, so ``round_latency_s`` holds the store's writes; the memory row is the reference.
The bench server also times the writes themselves on the recorder's writer thread:
``commit_s`` (median ``commit_round`` call: the closed round, its model version, the
client records, in one transaction), ``commit_max_s``, and ``store_write_s`` (every
write after the run's creation, client transitions included, divided by the rounds:
the transitions are written while the round runs, not awaited, but on the server
process's CPU and GIL, which the round needs too). The report shows
these rows in a section of their own (`fedgate.report.store_sections`), never in the
transport x codec tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import startup
import torch
from benchkit import BenchServer, EventLoop
from federations import FederationSpec, figures_info, median, run_timed, warm_up
from stall_probe import StallRun, probed_server, run_probed, stall_info, stall_spec

from fedgate.codecs import CODECS
from fedgate.core.data import Dataset, load_dataset
from fedgate.run.forkserver import ForkServer
from fedgate.run.sim_config import CLIENT_STARTS, EXEC, FORK, NETWORK_TRANSPORTS, SimConfig

TRANSPORTS = NETWORK_TRANSPORTS
CLIENTS = {False: (1, 4, 16), True: (2,)}
ROUNDS = {False: 8, True: 2}
STORES = ("memory", "sqlite")  # bench_server.STORES; memory first: the reference
STORE_CLIENTS = 4  # the figure is for the 4-client federation, quick or not

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def loop() -> Iterator[EventLoop]:
    # One torch thread per training call: the loop's worker threads run several at once.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    event_loop = EventLoop()
    try:
        yield event_loop
    finally:
        event_loop.close()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", 0)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "clients" in metafunc.fixturenames:
        metafunc.parametrize("clients", CLIENTS[metafunc.config.getoption("fedgate_quick")])


@pytest.fixture(scope="module")
def warmed(bench_server: BenchServer, loop: EventLoop, digits: Dataset) -> None:
    warm_up(bench_server, loop, digits, TRANSPORTS)


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rounds(
    benchmark: Any,
    bench_server: BenchServer,
    loop: EventLoop,
    digits: Dataset,
    transport: str,
    codec: str,
    clients: int,
    quick: bool,
    warmed: None,
) -> None:
    spec = FederationSpec(transport, codec, clients, ROUNDS[quick])
    benchmark.group = f"{clients} clients"
    figures, results = run_timed(benchmark, bench_server, loop, spec, digits)
    assert len(results["rounds"]) == spec.rounds
    assert all(r["participants"] == clients for r in results["rounds"])
    benchmark.extra_info.update(
        transport=transport,
        codec=codec,
        clients=clients,
        rounds=spec.rounds,
        model=spec.model,
        dataset=spec.dataset,
        partition=spec.partition,
        timing="round_latency",
        **figures_info(figures),
    )


@pytest.mark.parametrize("store", STORES)
def test_store_overhead(
    benchmark: Any,
    bench_server: BenchServer,
    loop: EventLoop,
    digits: Dataset,
    store: str,
    quick: bool,
    warmed: None,
) -> None:
    spec = FederationSpec("grpc", "raw", STORE_CLIENTS, ROUNDS[quick], store=store)
    benchmark.group = "store"
    figures, results = run_timed(benchmark, bench_server, loop, spec, digits)
    stored = results["store"]
    assert len(results["rounds"]) == spec.rounds and stored["kind"] == store
    assert all(r["participants"] == spec.clients for r in results["rounds"])
    # Every round reached the store, and every round attempt was committed by itself.
    assert stored["rounds_stored"] == spec.rounds
    assert len(stored["commits_s"]) == spec.rounds + len(results["attempts"])
    benchmark.extra_info.update(
        store=store,
        transport=spec.transport,
        codec=spec.codec,
        clients=spec.clients,
        rounds=spec.rounds,
        model=spec.model,
        dataset=spec.dataset,
        partition=spec.partition,
        timing="round_latency",
        commit_s=median(stored["commits_s"]),
        commit_max_s=max(stored["commits_s"]),
        store_write_s=stored["writes_s"] / spec.rounds,
        **figures_info(figures),
    )


# ---- issue 12: clients that start in a blink (helpers and row fields: bench/startup.py) ----

STARTUP_TRIES = 3  # client starts per row; the row keeps each, and their median
WHOLE_RUN = SimConfig(clients=10, rounds=20, partition="dirichlet:0.5", codec="raw", seed=0)
WHOLE_RUN_ROUNDS = {False: 20, True: 2}
WHOLE_RUN_CLIENTS = {False: 10, True: 3}
QUICK_SKIPS_EXEC = "quick: exec'd clients (seconds of imports each) are for full runs"
# (transport, client start): the framework-free reference, in-process, then processes
WHOLE_RUNS = [
    ("reference", ""),
    ("inproc", ""),
    *((t, s) for s in CLIENT_STARTS for t in NETWORK_TRANSPORTS),
]


@pytest.mark.parametrize("client_start", CLIENT_STARTS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_startup(
    benchmark: Any, transport: str, client_start: str, tmp_path: Path, quick: bool
) -> None:
    """``fedgate client --help``, and a client's time from its start to its first request
    (exec'd, or forked by a fork server that is ready)."""
    if quick and client_start == EXEC:
        pytest.skip(QUICK_SKIPS_EXEC)
    tries: list[float] = []
    forks = ForkServer(tmp_path / "forkserver.log") if client_start == FORK else None
    try:
        if forks is not None:
            forks.wait_ready()

        def start_one() -> None:
            tries.append(startup.first_request_s(transport, tmp_path / "client.log", forks))

        benchmark.pedantic(start_one, rounds=1 if quick else STARTUP_TRIES)
    finally:
        if forks is not None:
            forks.close()
    benchmark.group = "client startup"
    benchmark.extra_info.update(
        transport=transport,
        client_start=client_start,
        timing="client_start",  # the whole call: start, first request, stop
        first_request_s=median(tries),
        first_request_tries=tries,  # each try's seconds (a list: no *_s field)
        help_s=startup.help_wall_s(),
    )


@pytest.fixture(scope="module")
def whole_run_config(quick: bool) -> SimConfig:
    return dataclasses.replace(
        WHOLE_RUN, rounds=WHOLE_RUN_ROUNDS[quick], clients=WHOLE_RUN_CLIENTS[quick]
    )


REFERENCE_TRIES = 2  # the first run in a process pays the data's and kernels' first use


@pytest.fixture(scope="module")
def reference_s(whole_run_config: SimConfig) -> float:
    """The framework-free loop's wall time every whole-run row is divided by: the best of
    `REFERENCE_TRIES` runs (the reference is a bound, so its best run is the fair one)."""
    return min(startup.reference_run(whole_run_config)[0] for _ in range(REFERENCE_TRIES))


@pytest.mark.parametrize(("run", "client_start"), WHOLE_RUNS)
def test_whole_run(
    benchmark: Any,
    run: str,
    client_start: str,
    whole_run_config: SimConfig,
    reference_s: float,
    quick: bool,
) -> None:
    """10 clients x 20 rounds on digits, dirichlet:0.5, raw codec: a whole simulation's
    wall time against the same arithmetic in a plain loop (``ratio``: run / reference)."""
    if quick and client_start == EXEC:
        pytest.skip(QUICK_SKIPS_EXEC)
    config = dataclasses.replace(
        whole_run_config,
        transport="inproc" if run == "reference" else run,
        client_start=client_start or EXEC,
    )
    figures: dict[str, Any] = {}

    def once() -> None:
        if run == "reference":
            figures["wall_s"], figures["final_accuracy"] = startup.reference_run(config)
        else:
            figures["wall_s"], document = startup.whole_run_s(config)
            figures["final_accuracy"] = document["final_accuracy"]

    benchmark.pedantic(once, rounds=1)
    benchmark.group = "whole run"
    named = {"transport": config.transport, "client_start": client_start} if client_start else {}
    benchmark.extra_info.update(
        run=run,
        **(named if run != "reference" else {}),
        clients=config.clients,
        rounds=config.rounds,
        partition=config.partition,
        codec=config.codec,
        timing="whole_run",
        reference_s=reference_s,
        ratio=figures["wall_s"] / reference_s,
        **figures,
    )


@pytest.mark.parametrize("offload", [True, False], ids=["processes", "threads"])
def test_codec_stall(
    request: pytest.FixtureRequest,
    loop: EventLoop,
    digits: Dataset,
    quick: bool,
    offload: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Issue 12: a JSON client beside healthy raw ones on ResNet-18; the server's worst
    event-loop stall and the clients it marked failed, with GIL-bound codecs in worker
    processes or, as before, on threads (`stall_probe.py`). Quick: the CNN with every JSON
    payload offloaded, no comparison and no row: the path runs; figures would mean nothing."""
    spec = stall_spec(quick)
    limit_s = 300.0 if quick else 1200.0
    with probed_server(tmp_path_factory.mktemp("stall") / "server.log") as server:
        if quick:
            if not offload:
                pytest.skip("quick: the comparison with threads is for full runs")
            run = run_probed(server, loop, spec, digits, offload, limit_s, min_bytes=0)
            assert run.echo_updates >= 1 and run.stall["ticks"] > 0
            return
        benchmark = request.getfixturevalue("benchmark")
        benchmark.group = "codec stall"
        runs: list[StallRun] = []
        benchmark.pedantic(
            lambda: runs.append(run_probed(server, loop, spec, digits, offload, limit_s)),
            rounds=1,
        )
    benchmark.extra_info.update(stall_info(runs[0], spec, offload))
