"""Virtual clients: many federation clients in one process that hold a model only to train.

A `ClientHost` runs the virtual clients given to it as coroutines of one event loop, each
the ordinary client loop (`FederatedClient`: join, long-poll for tasks, heartbeat, leave)
over its own connection to the gateway. Idle, a virtual client is its session and its part
of the training data (copied out of the data set, which is then let go): no model. A task
to train builds the model, trains it, uploads the result and drops it again, and at most
``train_slots`` of the host's clients do that at once (the rest of the round's selected
clients wait their turn, heartbeating): so hundreds of virtual clients share a few cores,
and a host's memory grows with its slots, not with its clients.

Kept between tasks by a process-per-client client, and not here: the model it last
received (so every download is a whole model, never a delta to one held) and the
residual of error feedback (lossy codecs then drop what they lose instead of carrying it
to the next round; the upload is still a delta where the codec asks for one). Both are
the size of the model, per client: holding them is what virtual clients must not do.

No Ray here: `fedgate.run.engines.ray_sim` makes `ClientHost` a Ray actor.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fedgate.core.augment import Augmentation
from fedgate.core.client import FederatedClient
from fedgate.core.data import load_dataset
from fedgate.core.messages import Task, TrainConfig
from fedgate.core.models import ModelSpec, build_model
from fedgate.core.partition import partition
from fedgate.core.trainers import client_seed
from fedgate.core.training import LocalTrainer, TrainResult
from fedgate.core.transport import Session, Transport
from fedgate.errors import FedgateError

TransportFactory = Callable[[str, str], Transport]  # (transport name, address) -> transport


@dataclass(frozen=True)
class HostSpec:
    """What one host needs to run its share of the virtual clients (sent to it by Ray)."""

    host: int  # this host's number among the simulation's hosts
    indices: tuple[int, ...]  # the clients it runs, by index into the split
    of: int  # clients in the whole simulation: the split is into this many parts
    dataset: str
    model: str
    partition: str
    seed: int
    data_dir: str  # "": $FEDGATE_DATA_DIR, as for `fedgate client`
    codecs: tuple[str, ...]  # by position in ``indices``
    transports: tuple[str, ...]  # by position in ``indices``: a client transport's name
    deltas: bool | None
    train_slots: int = 1  # clients of this host that hold a model and train at once
    threads: int = 1  # torch threads (Ray gives the host one CPU)


@dataclass(frozen=True)
class Gateway:
    """Where and how the clients reach the federation (told to a host once it listens)."""

    addresses: Mapping[str, str]  # by transport name
    key: str = field(default="", repr=False)  # the enrolment key ("": open enrolment)


@dataclass(frozen=True)
class HostReport:
    """What one host did, for the results document and the tests."""

    host: int
    node: str  # where it ran (Ray's node address)
    clients: int
    joined: int  # clients the federation admitted (the rest were still waiting to join)
    finished: int  # clients that took part to the run's end (the rest failed)
    failures: tuple[str, ...]  # one line for each client that ended otherwise
    trainings: int  # updates the gateway accepted
    models_built: int  # one per task trained: idle clients build none
    peak_models: int  # models alive at once, at most (never more than train_slots)
    models_alive: int  # after the run: 0
    clients_holding: int  # after the run, clients still holding a model or a residual: 0
    peak_rss_bytes: int  # the host process's peak resident memory (0: not on Linux)
    bytes_up: int
    bytes_down: int


class ModelCount:
    """The models this process built, and how many were alive at once. Thread-safe:
    trainers build models in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.built = 0
        self.alive = 0
        self.peak = 0

    def build(self, name: str, spec: ModelSpec) -> nn.Module:
        model = build_model(name, spec)
        with self._lock:
            self.built += 1
            self.alive += 1
            self.peak = max(self.peak, self.alive)
        weakref.finalize(model, self._freed)  # counted down when the model is collected
        return model

    def _freed(self) -> None:
        with self._lock:
            self.alive -= 1


class VirtualTrainer:
    """A client's examples, and a model only while `train` runs (a `Trainer`)."""

    def __init__(
        self,
        model: str,
        spec: ModelSpec,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        seed: int,
        augmentation: Augmentation | None,
        models: ModelCount,
    ) -> None:
        if len(x) != len(y) or len(x) == 0:
            raise ValueError("a client needs a non-empty set of examples with one label each")
        self.model, self.spec = model, spec
        self.x, self.y = x, y
        self.seed = seed
        self.augmentation = augmentation
        self.models = models

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        # the trainer process-per-client clients keep, made for this task and let go with it:
        # it trains exactly as theirs (same seed, same batch order per round)
        model = self.models.build(self.model, self.spec)
        trainer = LocalTrainer(model, self.x, self.y, self.seed, self.augmentation)
        return trainer.train(weights, config)


class VirtualClient(FederatedClient):
    """The client loop, training only while it holds one of its host's slots, and
    keeping no model between tasks (see the module's docstring)."""

    def __init__(
        self,
        transport: Transport,
        trainer: VirtualTrainer,
        name: str,
        codec: str,
        *,
        slots: asyncio.Semaphore,
        deltas: bool | None,
        key: str,
    ) -> None:
        super().__init__(transport, trainer, name, codec, deltas=deltas, key=key)
        self.slots = slots

    @property
    def holding(self) -> bool:
        """Does this client hold a model, or a residual the size of one?"""
        return self._held is not None or bool(self._residual)

    async def _train(self, session: Session, task: Task) -> None:
        async with self.slots:
            try:
                await super()._train(session, task)
            finally:
                self._held, self._residual = None, {}


class ClientHost:
    """Runs the virtual clients of a `HostSpec` until the run ends (`run`)."""

    def __init__(self, spec: HostSpec, connect: TransportFactory, node: str = "") -> None:
        self.spec = spec
        self.connect = connect
        self.node = node
        self.models = ModelCount()
        self.clients: list[VirtualClient] = []
        self._running: set[asyncio.Task[str]] = set()  # loops of clients in their run
        self._stopped = False

    async def run(self, gateway: Gateway) -> HostReport:
        """Every virtual client's loop, to its end (or `stop`); what they did."""
        torch.set_num_threads(self.spec.threads)
        failures = self._make_clients(gateway)
        loops = [self._run_one(client) for client in self.clients]
        outcomes = await asyncio.gather(*loops, return_exceptions=True)
        lines = [outcome_line(c, o) for c, o in zip(self.clients, outcomes, strict=True)]
        return self._report(finished=lines.count(""), failures=failures + list(filter(None, lines)))

    async def stop(self) -> None:
        """End the clients still running, once the run is over: a client that has not
        heard so yet (its server exited first) would otherwise go on asking for tasks."""
        self._stopped = True
        for loop in self._running:
            loop.cancel()

    def _make_clients(self, gateway: Gateway) -> list[str]:
        """The clients, each with its part of the data (the data set itself is let go);
        a line for each that cannot be made (no examples in its part...)."""
        spec = self.spec
        dataset = load_dataset(spec.dataset, spec.seed, spec.data_dir or None)
        parts = partition(dataset.y_train.numpy(), spec.of, spec.partition, spec.seed)
        slots = asyncio.Semaphore(spec.train_slots)
        failures = []
        for position, index in enumerate(spec.indices):
            rows = torch.from_numpy(parts[index])
            name = f"client-{index}"
            try:
                trainer = VirtualTrainer(
                    spec.model,
                    dataset.model_spec,
                    dataset.x_train[rows],
                    dataset.y_train[rows],
                    seed=client_seed(spec.seed, index),
                    augmentation=dataset.augmentation,
                    models=self.models,
                )
                transport = spec.transports[position]
                link = self.connect(transport, gateway.addresses[transport])
                codec, key = spec.codecs[position], gateway.key
                client = VirtualClient(
                    link, trainer, name, codec, slots=slots, deltas=spec.deltas, key=key
                )
            except (FedgateError, ValueError) as error:
                failures.append(f"{name}: {error}")
                continue
            self.clients.append(client)
        return failures

    async def _run_one(self, client: VirtualClient) -> str:
        """'' when the client took part to the end of the run, else why it did not."""
        loop = asyncio.current_task()
        assert loop is not None
        try:
            if self._stopped:
                return ""
            self._running.add(loop)  # `stop` cancels its run, not its closing
            try:
                await client.run()
            finally:
                self._running.discard(loop)
        except FedgateError as error:
            named = error.message.startswith(f"{client.name}:")  # as the client loop tells
            return error.message if named else f"{client.name}: {error.message}"
        except asyncio.CancelledError:
            return ""  # stopped after the run ended (`stop`); it left on its way out
        finally:
            await client.transport.close()
        return ""

    def _report(self, *, finished: int, failures: list[str]) -> HostReport:
        gc.collect()  # a model in a reference cycle is alive until collected
        reports = [client.report for client in self.clients]
        return HostReport(
            host=self.spec.host,
            node=self.node,
            clients=len(self.spec.indices),
            joined=sum(bool(report.client_id) for report in reports),
            finished=finished,
            failures=tuple(failures),
            trainings=sum(len(report.rounds) for report in reports),
            models_built=self.models.built,
            peak_models=self.models.peak,
            models_alive=self.models.alive,
            clients_holding=sum(client.holding for client in self.clients),
            peak_rss_bytes=peak_rss_bytes(),
            bytes_up=sum(report.bytes_up for report in reports),
            bytes_down=sum(report.bytes_down for report in reports),
        )


def outcome_line(client: VirtualClient, outcome: str | BaseException) -> str:
    """A client loop's outcome as a failure line ('': none)."""
    if isinstance(outcome, BaseException):  # not a fedgate error: a bug, told as one
        return f"{client.name}: {outcome!r}"
    return outcome


def peak_rss_bytes(status: Path = Path("/proc/self/status")) -> int:
    """This process's peak resident memory (VmHWM); 0 where /proc does not say."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    return 0
