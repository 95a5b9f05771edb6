"""A whole federation in one command: a server and N clients, with results as JSON.

``inproc`` runs everything in this process; a network transport (`NETWORK_TRANSPORTS`:
``grpc``, ``rest``) or ``mixed`` (clients take them in turn) starts a real `fedgate serve`
and one `fedgate client` process per client on loopback. That is the ``local`` engine;
the ``ray`` engine runs the clients on a Ray cluster instead (`fedgate.run.engines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgate.cli_config import config_arguments
from fedgate.core.client import FederatedClient
from fedgate.core.data import load_dataset
from fedgate.core.enrolment import PEER_JOINS
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.trainers import build_trainer
from fedgate.errors import FedgateError
from fedgate.run.client_options import ClientOptions
from fedgate.run.engines import RAY, run_on_ray
from fedgate.run.forkserver import ForkServer
from fedgate.run.launch import (
    ChildProcess,
    ServerProcess,
    fork_clients,
    start_client,
    start_server,
    stop_process,
)
from fedgate.run.results import dataset_partition, results_document
from fedgate.run.sim_config import (
    FORK,
    ResultsCallback,
    RoundCallback,
    SimConfig,
)
from fedgate.transport.inproc import InProcTransport

RESULTS_POLL_S = 0.05  # how often to look for the server's results once its run has ended


def run_simulation(
    config: SimConfig,
    on_round: RoundCallback | None = None,
    on_server: Callable[[ServerProcess], None] | None = None,
    *,
    keep_serving_s: float = 0.0,
    on_results: ResultsCallback | None = None,
    serve_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the federation the config describes and return its results document.

    ``on_server`` is told about the server process once it listens (network transports).
    ``on_results`` gets the results document as soon as the run has ended; over a network
    transport, the server then goes on serving ``keep_serving_s`` seconds (its dashboard,
    its models) before this returns. ``serve_args``: more `fedgate serve` options.
    """
    config.validate()
    if config.engine == RAY:  # Ray is imported only here
        serving = Serving(keep_serving_s, on_results, serve_args)
        return run_on_ray(config, on_round, on_server, serving)
    if config.transport == InProcTransport.name:
        document = asyncio.run(simulate(config, on_round))
        if on_results is not None:
            on_results(document)
        return document
    serving = Serving(keep_serving_s, on_results, serve_args)
    return simulate_network(config, on_round, on_server, serving)


@dataclass(frozen=True)
class Serving:
    """How a network simulation's server is run beyond its federation."""

    keep_serving_s: float = 0.0  # after the run, before the server exits
    on_results: ResultsCallback | None = None
    serve_args: tuple[str, ...] = ()

    def arguments(self) -> list[str]:
        keep = ["--keep-serving", str(self.keep_serving_s)] if self.keep_serving_s > 0 else []
        return [*keep, *self.serve_args]


async def simulate(config: SimConfig, on_round: RoundCallback | None = None) -> dict[str, Any]:
    """Everything in this process, over the in-process transport."""
    config.validate()
    started = time.perf_counter()
    dataset = load_dataset(config.dataset, config.seed, config.data_dir)
    split = dataset_partition(dataset, config.clients, config.partition, config.seed)
    federation = build_federation(dataset, config.model, config.run_config())
    run = federation.start()
    reporter = asyncio.create_task(report_rounds(federation, on_round)) if on_round else None
    clients = [
        FederatedClient(
            InProcTransport(federation),
            build_trainer(
                dataset,
                config.model,
                spec=config.partition,
                index=i,
                of=config.clients,
                seed=config.seed,
            ),
            name=f"client-{i}",
            codec=config.codec_for(i),
            deltas=config.deltas_flag(),
        )
        for i in range(config.clients)
    ]
    client_tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        status = await run
        await asyncio.gather(*client_tasks)
    finally:
        for task in client_tasks:
            task.cancel()
        if reporter is not None and _ended_well(run):
            await reporter  # its watch ends with the run, after the last round's report
        elif reporter is not None:
            reporter.cancel()
        await federation.close()
    duration = time.perf_counter() - started
    return results_document(dataclasses.asdict(config), status, duration, partition=split)


def _ended_well(run: asyncio.Task[Any]) -> bool:
    return run.done() and not run.cancelled() and run.exception() is None


async def report_rounds(federation: Federation, on_round: RoundCallback) -> None:
    """Tell ``on_round`` of every round attempt as it closes, until the run ends."""
    seen = 0
    async for status in federation.watch(min_interval_s=0.0):
        for record in status.history[seen:]:
            on_round(record)
        seen = len(status.history)


def simulate_network(
    config: SimConfig,
    on_round: RoundCallback | None = None,
    on_server: Callable[[ServerProcess], None] | None = None,
    serving: Serving = Serving(),
) -> dict[str, Any]:
    """A real `fedgate serve` and one `fedgate client` process per client, on loopback
    (forked by a fork server unless ``config.client_start`` is ``exec``)."""
    started = time.perf_counter()
    # read here too: a data directory without the data fails before any process starts
    split = network_partition(config)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedgate-sim-")))
        results_path = workdir / "results.json"
        # started first: it imports the client side while the server starts; closed
        # last (it stops any child still running), before the directory goes
        forks = (
            stack.enter_context(ForkServer(workdir / "forkserver.log"))
            if config.client_start == FORK
            else None
        )
        # the key admits exactly the simulated clients: a key's limit, enforced for real
        server = start_server(
            [*serve_arguments(config, results_path), *serving.arguments()],
            workdir,
            key_clients=config.clients,
        )
        stack.callback(server.stop)
        if on_server is not None:
            on_server(server)
        clients = start_clients(config, server, workdir, forks)
        try:
            _follow(server, on_round, results_path)
            if not results_path.exists():
                raise FedgateError(f"the server left no results; its log ends:\n{_log(server)}")
            document: dict[str, Any] = json.loads(results_path.read_text())
            document["config"] = dataclasses.asdict(config)
            document["duration_s"] = round(time.perf_counter() - started, 3)
            document["partition"] = split
            if serving.on_results is not None:
                serving.on_results(document)
            server.process.wait()  # at once, or after --keep-serving
        finally:
            for process in clients:
                stop_process(process)
    return document


def start_clients(
    config: SimConfig, server: ServerProcess, workdir: Path, forks: ForkServer | None
) -> list[ChildProcess]:
    """One `fedgate client` process per simulated client: forked by ``forks`` (all asked
    for at once), else each exec'd; if one cannot start, none runs."""
    logs = [workdir / f"client-{i}.log" for i in range(config.clients)]
    if forks is not None:
        wanted = [(client_options(config, i), log) for i, log in enumerate(logs)]
        return list(fork_clients(server, forks, wanted))
    clients: list[ChildProcess] = []
    try:
        for i, log in enumerate(logs):
            args = client_arguments(config, i)
            clients.append(start_client(server, config.transport_for(i), args, log))
    except BaseException:
        for process in clients:
            stop_process(process)
        raise
    return clients


def network_partition(config: SimConfig) -> dict[str, Any]:
    """The split the client processes will make, from the data set loaded here, once."""
    dataset = load_dataset(config.dataset, config.seed, config.data_dir)
    return dataset_partition(dataset, config.clients, config.partition, config.seed)


def data_arguments(config: SimConfig) -> list[str]:
    """``--data-dir``, absolute: the processes need not share this one's directory."""
    if not config.data_dir:
        return []  # theirs is $FEDGATE_DATA_DIR, as this one's: they inherit its environment
    return ["--data-dir", str(Path(config.data_dir).expanduser().absolute())]


def serve_arguments(config: SimConfig, results_path: Path) -> list[str]:
    return [
        "--dataset",
        config.dataset,
        "--model",
        config.model,
        *data_arguments(config),
        *config_arguments(config.run_config()),
        "--exit-when-done",
        "--results",
        str(results_path),
        # every simulated client joins from this machine's one address
        "--peer-join-burst",
        str(max(PEER_JOINS.burst, config.clients + 10)),
        # one torch thread, as each client has: on one machine, more only compete with
        # the clients' training (10 clients on 2 cores: 4-9 ms a round, bench/README.md)
        "--threads",
        "1",
    ]


def client_arguments(config: SimConfig, index: int) -> list[str]:
    return [
        "--codec",
        config.codec_for(index),
        "--dataset",
        config.dataset,
        "--model",
        config.model,
        "--partition",
        config.partition,
        "--index",
        str(index),
        "--of",
        str(config.clients),
        "--seed",
        str(config.seed),
        "--threads",
        "1",
        "--deltas",
        config.deltas,
        *data_arguments(config),
    ]


def client_options(config: SimConfig, index: int) -> ClientOptions:
    """What `client_arguments` say, as the options a forked client runs on (the launcher
    fills in the server's address and key); tests/run/test_forkserver.py holds the two
    to the same client."""
    data_dir = Path(config.data_dir).expanduser().absolute() if config.data_dir else None
    return ClientOptions(
        server="",
        transport=config.transport_for(index),
        codec=config.codec_for(index),
        index=index,
        of=config.clients,
        dataset=config.dataset,
        model=config.model,
        partition=config.partition,
        seed=config.seed,
        threads=1,
        deltas=config.deltas_flag(),
        data_dir=data_dir,
    )


def _follow(server: ServerProcess, on_round: RoundCallback | None, results: Path) -> None:
    """Report rounds as the server closes them, from its status stream, until the run ends
    and the server has written ``results`` (or has exited)."""
    reported = 0
    for status in server.watch():
        for record in status.history[reported:]:
            if on_round is not None:
                on_round(record)
        reported = len(status.history)
    while not results.exists() and server.process.poll() is None:
        time.sleep(RESULTS_POLL_S)


def _log(server: ServerProcess) -> str:
    return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-30:])
