"""Whole fedgate federations for the rounds and flower suites, with every round timed.

The server is a real Gateway in the bench server process (`bench_server.py`); the clients
are real `FederatedClient`s in the benchmark process, each over its own gRPC or REST
connection on loopback (16 client processes would each import torch: ~3 s and ~300 MB
apiece on a 2-core machine). They run as tasks on one event loop; their training goes to
the loop's worker threads, one torch thread each (as ``fedgate sim`` runs its client
processes with ``--threads 1``).

Two things are observed on the client side, through thin wrappers that change nothing:

- when each round starts: the first TRAIN task of round *n* any client receives (and the
  STOP task after the last round), so pytest-benchmark can time each round as the
  interval between two starts;
- how long each client's local training took (a `LocalTrainer` subclass times
  ``train``), keyed by client and round id when the update is submitted.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from benchkit import BenchServer, EventLoop

from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig, settings_of
from fedgate.core.data import Dataset
from fedgate.core.messages import (
    EncodedModel,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    Task,
    TaskKind,
    TrainConfig,
    Update,
    UpdateReceipt,
)
from fedgate.core.trainers import build_trainer
from fedgate.core.training import LocalTrainer, TrainResult
from fedgate.core.transport import Session, Transport
from fedgate.transport.connect import connect

ROUND_DEADLINE_S = 120.0
WAIT_LIMIT_S = 600.0  # no round of these federations comes near this: something hangs


RUN = RunConfig()  # the run settings' defaults, which a spec keeps unless it says otherwise


@dataclass(frozen=True)
class FederationSpec:
    """One federation: digits CNN, iid split, every client in every round.

    It holds every run setting under its declared name (tests/test_config_schema.py checks
    that), and passes them all on by name; its other fields (transport, codec, store...)
    are the harness's own.
    """

    transport: str
    codec: str
    clients: int
    rounds: int
    partition: str = "iid"
    dataset: str = "digits"
    model: str = "cnn"
    seed: int = RUN.seed
    learning_rate: float = RUN.learning_rate
    local_epochs: int = RUN.local_epochs
    batch_size: int = RUN.batch_size
    strategy: str = RUN.strategy
    clip_norm: float = RUN.clip_norm
    clients_per_round: int = RUN.clients_per_round
    min_clients: int = 0  # 0: every client, in every round
    round_deadline_s: float = ROUND_DEADLINE_S
    heartbeat_interval_s: float = RUN.heartbeat_interval_s
    heartbeat_timeout_s: float = RUN.heartbeat_timeout_s
    admit_late: bool = RUN.admit_late
    store: str = "memory"  # the bench server's run store (no run setting): memory | sqlite

    def run_config(self) -> RunConfig:
        return RunConfig(**{**settings_of(self), "min_clients": self.min_clients or self.clients})

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(self.learning_rate, self.local_epochs, self.batch_size)


class TimedTrainer(LocalTrainer):
    """A LocalTrainer that keeps the wall time of its latest ``train`` call."""

    def __init__(self, base: LocalTrainer, seed: int) -> None:
        super().__init__(base.model, base.x, base.y, seed=seed)
        self.last_train_s = math.nan

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        start = time.perf_counter()
        try:
            return super().train(weights, config)
        finally:
            self.last_train_s = time.perf_counter() - start


def make_trainers(dataset: Dataset, spec: FederationSpec) -> list[TimedTrainer]:
    """Client i's part of the split, as `fedgate client --index i --of N` would take it."""
    return [
        TimedTrainer(
            build_trainer(
                dataset,
                spec.model,
                spec=spec.partition,
                index=index,
                of=spec.clients,
                seed=spec.seed,
            ),
            seed=spec.seed * 1000 + index,
        )
        for index in range(spec.clients)
    ]


@dataclass
class RoundWatch:
    """Round starts as the clients see them, and training times as they report them."""

    starts: dict[int, asyncio.Event] = field(default_factory=dict)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    train_s: dict[tuple[str, str], float] = field(default_factory=dict)  # (client, round id)

    def saw(self, task: Task) -> None:
        if task.kind is TaskKind.TRAIN:
            self.started(task.round).set()
        elif task.kind is TaskKind.STOP:
            self.finished.set()

    def started(self, number: int) -> asyncio.Event:
        return self.starts.setdefault(number, asyncio.Event())

    async def reached(self, number: int) -> None:
        """Return once round ``number`` has started, or the run has ended."""
        waits = {asyncio.ensure_future(self.started(number).wait())}
        waits.add(asyncio.ensure_future(self.finished.wait()))
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()


class ObservedTransport:
    """A client transport that tells a RoundWatch what passes through it, and no more."""

    def __init__(self, inner: Transport, trainer: TimedTrainer, watch: RoundWatch) -> None:
        self.inner, self.trainer, self.watch = inner, trainer, watch

    @property
    def name(self) -> str:
        return self.inner.name

    async def join(self, request: JoinRequest) -> JoinAck:
        return await self.inner.join(request)

    async def next_task(self, session: Session, wait_s: float) -> Task:
        task = await self.inner.next_task(session, wait_s)
        self.watch.saw(task)
        return task

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        return await self.inner.fetch_model(session, version, codec, have_ref)

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt:
        # The client trains, encodes, then submits: the trainer's latest time is this update's.
        self.watch.train_s[(session.client_id, update.round_id)] = self.trainer.last_train_s
        return await self.inner.submit_update(session, update)

    async def heartbeat(self, session: Session) -> HeartbeatAck:
        return await self.inner.heartbeat(session)

    async def leave(self, session: Session) -> None:
        await self.inner.leave(session)

    async def close(self) -> None:
        await self.inner.close()


class FederationRun:
    """One federation on the bench server with its clients on this process's event loop.

    ``start`` hosts it and runs until round 1 starts; each ``through_round(n)`` returns
    when round n+1 starts (or the run ends); ``finish`` waits for the clients to leave and
    returns the server's results document.
    """

    def __init__(self, server: BenchServer, loop: EventLoop, spec: FederationSpec) -> None:
        self.server, self.loop, self.spec = server, loop, spec
        self.watch = RoundWatch()
        self.clients: list[asyncio.Task[Any]] = []
        self.links: list[Transport] = []

    def start(self, dataset: Dataset) -> None:
        spec = self.spec
        hosted = self.server.start(
            spec.model, spec.run_config(), dataset=spec.dataset, store=spec.store
        )
        address = hosted.address(spec.transport)

        async def launch() -> None:
            for index, trainer in enumerate(make_trainers(dataset, spec)):
                link = ObservedTransport(connect(spec.transport, address), trainer, self.watch)
                self.links.append(link)
                client = FederatedClient(link, trainer, f"bench-{index}", spec.codec)
                self.clients.append(asyncio.create_task(client.run()))
            await self._until(self.watch.reached(1))

        self.loop.run(launch())

    def through_round(self, number: int) -> None:
        self.loop.run(self._until(self.watch.reached(number + 1)))

    def finish(self, wait: bool = True) -> dict[str, Any]:
        """Let the clients leave (``wait``) or cancel them; end the hosted federation."""

        async def wait_clients() -> None:
            async with asyncio.timeout(WAIT_LIMIT_S):
                await asyncio.gather(*self.clients)

        async def close_links() -> None:
            for task in self.clients:
                task.cancel()
            await asyncio.gather(*self.clients, return_exceptions=True)
            for link in self.links:
                await link.close()  # the clients leave; their connections stay ours to close

        try:
            if wait:
                self.loop.run(wait_clients())
        finally:
            self.loop.run(close_links())
            results = self.server.stop()
        return results

    async def _until(self, waiting: Coroutine[Any, Any, None]) -> None:
        """Await ``waiting``; a client that fails meanwhile fails the run with its error."""
        waiter = asyncio.ensure_future(waiting)
        try:
            async with asyncio.timeout(WAIT_LIMIT_S):
                while not waiter.done():
                    running = {task for task in self.clients if not task.done()}
                    done, _ = await asyncio.wait(
                        {waiter, *running}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done - {waiter}:
                        if task.exception() is not None:
                            raise RuntimeError("a bench client failed") from task.exception()
        finally:
            waiter.cancel()


@dataclass(frozen=True)
class RoundFigures:
    """Per completed round: harness wall time, slowest training, overhead; and the run's."""

    latencies_s: list[float]
    trainings_s: list[float]
    overheads_s: list[float]
    server_rounds_s: list[float]
    bytes_up: list[int]
    bytes_down: list[int]
    accuracy: list[float]


def round_figures(
    results: Mapping[str, Any], walls: list[float], watch: RoundWatch
) -> RoundFigures:
    """Line the harness's per-round times up with the server's record of each round."""
    rounds = results["rounds"]
    if len(rounds) != len(walls):
        raise RuntimeError(f"{len(walls)} timed rounds but the server completed {len(rounds)}")
    trainings = [
        max(
            watch.train_s[(client, f"{r['round']}.{r['attempt']}")]
            for client in r["participant_ids"]
        )
        for r in rounds
    ]
    return RoundFigures(
        latencies_s=walls,
        trainings_s=trainings,
        overheads_s=[wall - train for wall, train in zip(walls, trainings, strict=True)],
        server_rounds_s=[float(r["duration_s"]) for r in rounds],
        bytes_up=[int(r["bytes_up"]) for r in rounds],
        bytes_down=[int(r["bytes_down"]) for r in rounds],
        accuracy=[float(r["accuracy"]) for r in rounds],
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def run_timed(
    benchmark: Any,
    server: BenchServer,
    loop: EventLoop,
    spec: FederationSpec,
    dataset: Dataset,
) -> tuple[RoundFigures, dict[str, Any]]:
    """Run ``spec`` with pytest-benchmark timing each round; the figures and the results."""
    federation = FederationRun(server, loop, spec)
    rounds = iter(range(1, spec.rounds + 1))
    try:
        federation.start(dataset)
        benchmark.pedantic(lambda: federation.through_round(next(rounds)), rounds=spec.rounds)
    except BaseException:
        federation.finish(wait=False)
        raise
    results = federation.finish()
    stats = getattr(benchmark.stats, "stats", None)  # None when benchmarks are disabled
    walls = [float(t) for t in stats.data] if stats is not None else []
    return round_figures(results, walls, federation.watch), results


def figures_info(figures: RoundFigures) -> dict[str, Any]:
    traffic = [up + down for up, down in zip(figures.bytes_up, figures.bytes_down, strict=True)]
    return {
        "round_latencies_s": figures.latencies_s,
        "overhead_s": median(figures.overheads_s),
        "round_overheads_s": figures.overheads_s,
        "train_s": median(figures.trainings_s),
        "round_trainings_s": figures.trainings_s,
        "server_round_s": median(figures.server_rounds_s),
        "bytes_per_round": statistics.fmean(traffic),
        "bytes_up_per_round": statistics.fmean(figures.bytes_up),
        "bytes_down_per_round": statistics.fmean(figures.bytes_down),
        "accuracy": figures.accuracy[-1],
        "accuracy_per_round": figures.accuracy,
    }


def warm_up(
    server: BenchServer, loop: EventLoop, dataset: Dataset, transports: Iterable[str]
) -> None:
    """One untimed one-client round per transport: a process's first backward pass, first
    connection and first evaluation cost seconds once, and no benchmark should pay them."""
    for transport in transports:
        run = FederationRun(server, loop, FederationSpec(transport, "raw", clients=1, rounds=1))
        try:
            run.start(dataset)
            run.through_round(1)
        except BaseException:
            run.finish(wait=False)
            raise
        run.finish()
