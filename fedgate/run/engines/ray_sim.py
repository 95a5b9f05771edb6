"""`fedgate sim --engine ray`: the simulation's virtual clients on a Ray cluster.

The clients are spread over client hosts, one Ray actor per CPU of the cluster (at most
one per client), each holding one CPU and running its share of the virtual clients
(`fedgate.run.engines.virtual`): client ``i`` on host ``i % hosts``. Over ``grpc``, ``rest``
or ``mixed`` the federation is the real `fedgate serve` that `sim` starts with the local
engine, and each virtual client is one client of it, with its own connection and session;
over ``inproc`` it is a Ray actor of its own (`fedgate.run.engines.ray_actors`).

Without ``--ray-address``, `ray.init` starts a cluster on this machine (a CPU each host,
no dashboard, a small object store, no usage reporting) and shuts it down at the end;
with one, the cluster is joined and left as it is. When its nodes are other machines, the
gateway listens on every interface and the hosts reach it at this node's address, in plain
text as `sim`'s gateway always is (the cluster's network is taken to be its own); it takes
enrolment keys, as always, and the key reaches the hosts through Ray. Every node needs
fedgate installed, and the data directory of a data set read from files at the same path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from fedgate.core.messages import FederationStatus, RoundRecord
from fedgate.errors import FedgateError
from fedgate.run.engines.ray_actors import (
    CLIENT_ACTOR,
    FEDERATION_ACTOR,
    ActorTransport,
    answer,
    expect,
    node_address,
)
from fedgate.run.engines.virtual import Gateway, HostReport, HostSpec, peak_rss_bytes
from fedgate.run.launch import ServerProcess, start_server
from fedgate.run.results import results_document
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import Serving, _follow, _log, network_partition, serve_arguments
from fedgate.transport.servers import host_port

log = logging.getLogger("fedgate.sim")
RoundCallback = Callable[[RoundRecord], None]
ServerCallback = Callable[[ServerProcess], None]
Completion = Callable[[dict[str, Any]], None]  # completes the results document
OBJECT_STORE_BYTES = 128 * 1024**2  # a local cluster's: models pass through it (inproc)
FINISH_S = 30.0  # for the hosts to report once the run has ended
READY_S = 300.0  # for every host to have started (Ray starting processes on a busy machine)
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - only for a cluster of several machines


@dataclass(frozen=True)
class Cluster:
    address: str  # "": started here
    cpus: int
    nodes: int
    node_ip: str  # this node's address, as the cluster knows it
    spans_machines: bool  # has nodes other than this machine

    def hosts_for(self, config: SimConfig) -> int:
        return max(1, min(config.clients, self.cpus))

    def serve_arguments(self) -> list[str]:
        """The gateway listens where the hosts can reach it (the launcher's loopback,
        unless some are on other machines)."""
        return ["--host", ALL_INTERFACES] if self.spans_machines else []

    def reachable(self, addresses: Mapping[str, str]) -> dict[str, str]:
        """The gateway's addresses as hosts on any node reach them."""
        if not self.spans_machines:
            return dict(addresses)
        return {name: on_host(address, self.node_ip) for name, address in addresses.items()}


def on_host(address: str, host: str) -> str:
    """``address`` (host:port, or a URL without a path) with ``host`` for its host."""
    scheme, separator, rest = address.rpartition("://")
    port = int(rest.rsplit(":", 1)[1])
    return f"{scheme}{separator}{host_port(host, port)}"


@contextmanager
def ray_cluster(address: str) -> Iterator[Cluster]:
    """Ray, initialised (and shut down after) unless the caller already has it."""
    owned = not ray.is_initialized()
    if owned:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        ray.init(**init_options(address))
    try:
        node_ip = node_address()
        nodes = [
            str(node["NodeManagerAddress"])
            for node in ray.nodes()  # type: ignore[no-untyped-call]
            if node["Alive"]
        ]
        yield Cluster(
            address=address,
            cpus=int(ray.cluster_resources().get("CPU", 1)),  # type: ignore[no-untyped-call]
            nodes=len(nodes),
            node_ip=node_ip,
            spans_machines=any(ip != node_ip for ip in nodes),
        )
    finally:
        if owned:
            ray.shutdown()


def init_options(address: str) -> dict[str, Any]:
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        return {"address": address, **quiet}
    return {
        "num_cpus": len(os.sched_getaffinity(0)),
        "include_dashboard": False,
        "object_store_memory": OBJECT_STORE_BYTES,
        **quiet,
    }


def host_specs(config: SimConfig, hosts: int) -> list[HostSpec]:
    """Client ``i`` on host ``i % hosts``."""
    specs = []
    for host in range(hosts):
        indices = tuple(range(host, config.clients, hosts))
        specs.append(
            HostSpec(
                host=host,
                indices=indices,
                of=config.clients,
                dataset=config.dataset,
                model=config.model,
                partition=config.partition,
                seed=config.seed,
                data_dir=absolute_data_dir(config),
                codecs=tuple(config.codec_for(i) for i in indices),
                transports=tuple(config.transport_for(i) for i in indices),
                deltas=config.deltas_flag(),
            )
        )
    return specs


def absolute_data_dir(config: SimConfig) -> str:
    """``--data-dir``, absolute: Ray's workers need not share this process's directory."""
    return str(Path(config.data_dir).expanduser().absolute()) if config.data_dir else ""


class Fleet:
    """The client hosts of one simulation, as Ray actors."""

    def __init__(self, specs: list[HostSpec], federation: Any = None) -> None:
        """Made at once, while the federation starts: each host imports torch and
        fedgate first, which takes seconds."""
        self.hosts: list[Any] = [  # ray.actor.ActorHandle: untyped
            CLIENT_ACTOR.options(num_cpus=1, scheduling_strategy="SPREAD").remote(spec, federation)
            for spec in specs
        ]
        self.runs: list[Any] = []
        self._closing = threading.Event()

    def start(self, gateway: Gateway, give_up: Callable[[], object]) -> None:
        """The hosts' clients join ``gateway``. ``give_up`` is called (from a thread) if
        every host ends before the run does with no client left in it: a run without
        clients would wait for them for ever.

        Every host is waited for first: on a busy machine one host's process can start
        seconds after another's, and a short run could open, and end, with the first
        host's clients alone."""
        ray.get([host.ready.remote() for host in self.hosts], timeout=READY_S)
        self.runs = [host.run.remote(gateway) for host in self.hosts]

        def watching() -> None:
            try:
                ray.wait(self.runs, num_returns=len(self.runs), timeout=None)
                if not self._closing.is_set() and not any(r.finished for r in self.collect(0)[0]):
                    give_up()
            except Exception:  # a watchdog must not fail the run it watches
                log.debug("the hosts' watchdog failed", exc_info=True)

        threading.Thread(target=watching, name="fedgate-ray-hosts", daemon=True).start()

    def finish(self, timeout_s: float = FINISH_S) -> tuple[list[HostReport], list[str]]:
        """Once the run is over: the hosts' reports, and what failed of them."""
        self._closing.set()
        for host in self.hosts:
            host.stop.remote()
        return self.collect(timeout_s)

    def took_part(self) -> tuple[list[HostReport], list[str]]:
        """`finish`, or a FedgateError if no client took part to the end (the watchdog
        stopped a run every client had left)."""
        reports, failures = self.finish()
        if not any(report.finished for report in reports):
            raise FedgateError(f"no virtual client took part to the end:{self.failures()}")
        return reports, failures

    def collect(self, timeout_s: float) -> tuple[list[HostReport], list[str]]:
        """The reports of the hosts that have ended, and a line for each of the others."""
        reports, failures = [], []
        for number, run in enumerate(self.runs):
            try:
                reports.append(expect(HostReport, ray.get(run, timeout=timeout_s)))
            except GetTimeoutError:
                failures.append(f"host {number}: still running after {timeout_s:g}s")
            except RayTaskError as error:
                failures.append(f"host {number}: {error.cause or error}")
            except RayError as error:
                failures.append(f"host {number}: {type(error).__name__}")
        return reports, failures

    def failures(self) -> str:
        """What went wrong with the clients, for an error message ('' when nothing)."""
        reports, failures = self.collect(0)
        lines = [*failures, *(line for report in reports for line in report.failures)]
        return "".join(f"\n  {line}" for line in lines[:20])

    def kill(self) -> None:
        self._closing.set()
        for host in self.hosts:
            ray.kill(host)


def engine_section(
    cluster: Cluster, reports: list[HostReport], failures: list[str]
) -> dict[str, Any]:
    """The results document's ``engine``: where the clients ran, what they held."""
    return {
        "name": "ray",
        "address": cluster.address or "local",
        "nodes": cluster.nodes,
        "cluster_cpus": cluster.cpus,
        "hosts": len(reports) + len(failures),
        "virtual_clients": sum(r.clients for r in reports),
        "joined": sum(r.joined for r in reports),
        "finished": sum(r.finished for r in reports),
        "trainings": sum(r.trainings for r in reports),
        "models_built": sum(r.models_built for r in reports),
        "peak_models_per_host": max((r.peak_models for r in reports), default=0),
        "models_alive_after": sum(r.models_alive for r in reports),
        "clients_holding_after": sum(r.clients_holding for r in reports),
        "host_peak_rss_bytes": [r.peak_rss_bytes for r in reports],
        "failures": [*failures, *(line for r in reports for line in r.failures)],
    }


def simulate_on_ray(
    config: SimConfig,
    on_round: RoundCallback | None,
    on_server: ServerCallback | None,
    serving: Serving,
) -> dict[str, Any]:
    """`run_simulation` with the ray engine: the same results document, and ``engine``."""
    config.validate()
    started = time.perf_counter()
    split = network_partition(config)  # the split the hosts make, from the data set, once

    def complete(document: dict[str, Any]) -> None:
        document["config"] = dataclasses.asdict(config)
        document["partition"] = split
        document["duration_s"] = round(time.perf_counter() - started, 3)
        if serving.on_results is not None:
            serving.on_results(document)

    with ray_cluster(config.ray_address) as cluster:
        if config.transport == ActorTransport.name:
            return in_an_actor(config, cluster, on_round, complete)
        return over_the_network(config, cluster, (on_round, on_server, complete), serving)


def over_the_network(
    config: SimConfig,
    cluster: Cluster,
    callbacks: tuple[RoundCallback | None, ServerCallback | None, Completion],
    serving: Serving,
) -> dict[str, Any]:
    """A real `fedgate serve`, as the local engine starts it, and the hosts' clients.
    ``callbacks``: told of each round, of the server once it listens, and given the
    results document to complete as soon as the run has ended."""
    on_round, on_server, complete = callbacks
    fleet = Fleet(host_specs(config, cluster.hosts_for(config)))
    try:
        with tempfile.TemporaryDirectory(prefix="fedgate-sim-") as tmp:
            results = Path(tmp) / "results.json"
            arguments = [*serve_arguments(config, results), *cluster.serve_arguments()]
            server = start_server(
                [*arguments, *serving.arguments()], Path(tmp), key_clients=config.clients
            )
            try:
                if on_server is not None:
                    on_server(server)
                gateway = Gateway(cluster.reachable(server.addresses), server.enrolment_key)
                fleet.start(gateway, server.stop)
                document, server_rss = server_results(server, fleet, on_round, results)
                document["engine"] = {
                    **engine_section(cluster, *fleet.took_part()),
                    "server_peak_rss_bytes": server_rss,
                }
                complete(document)
                server.process.wait()  # at once, or after --keep-serving
            finally:
                server.stop()
    finally:
        fleet.kill()
    return document


def server_results(
    server: ServerProcess, fleet: Fleet, on_round: RoundCallback | None, results: Path
) -> tuple[dict[str, Any], int]:
    """The server's results document, once its run has ended (its rounds reported to
    ``on_round`` as they close), and its peak memory so far."""
    _follow(server, on_round, results)
    if not results.exists():
        raise FedgateError(
            f"the server left no results; the clients:{fleet.failures() or ' fine'}"
            f"\nthe server's log ends:\n{_log(server)}"
        )
    document: dict[str, Any] = json.loads(results.read_text())
    # read while it runs: the peak (VmHWM) of a process that has exited is gone with it
    return document, peak_rss_bytes(Path(f"/proc/{server.process.pid}/status"))


def in_an_actor(
    config: SimConfig, cluster: Cluster, on_round: RoundCallback | None, complete: Completion
) -> dict[str, Any]:
    """The federation in a Ray actor, the hosts' clients calling it."""
    run_config = config.run_config()
    federation: Any = FEDERATION_ACTOR.options(
        num_cpus=0,  # it mostly waits; the hosts hold the CPUs
        max_concurrency=max(1000, 4 * config.clients),  # each client: a poll, a heartbeat...
    ).remote(config.dataset, config.model, absolute_data_dir(config), run_config)
    fleet = Fleet(host_specs(config, cluster.hosts_for(config)), federation)
    try:
        answer(federation.start.remote())
        fleet.start(Gateway({ActorTransport.name: ""}), federation.stop.remote)
        follow_actor(federation, on_round)
        status = expect(FederationStatus, answer(federation.outcome.remote()))
        reports, failures = fleet.took_part()
        document = results_document({}, status, 0.0)
        document["engine"] = engine_section(cluster, reports, failures)
        complete(document)
    finally:
        fleet.kill()
        ray.kill(federation)
    return document


def follow_actor(federation: Any, on_round: RoundCallback | None) -> None:
    """Report rounds as the federation actor closes them, until its run ends."""
    seen, ended = 0, on_round is None
    while not ended:
        answered = expect(tuple, answer(federation.rounds_after.remote(seen)))
        records: tuple[RoundRecord, ...] = answered[0]
        ended = bool(answered[1])
        for record in records:
            if on_round is not None:
                on_round(record)
        seen += len(records)
