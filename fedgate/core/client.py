"""The client loop: join, take tasks, train, send updates, heartbeat, leave.

The session itself (joining, joining again, heartbeats, leaving) is the client's
`Membership` (`fedgate.core.membership`, no torch): a `fedgate client` process makes it and
joins before it imports torch, then hands it to the `FederatedClient` it builds.

A round costs one request down and one up where the transport can carry a TRAIN task's
model with the task (`ModelOnTask`); a task that comes without its model (an older
server, a transport with only the six calls) is completed by fetching it.

It runs over any `Transport` and ends on its own only where going on cannot help:

- a STOP task, or a join refused because the run has ended: `run` returns;
- cancellation (SIGINT/SIGTERM in `fedgate client`): it leaves cleanly on its way out;
- a refusal that asking again cannot change: its enrolment key refused at join
  (Unauthorized, Forbidden), its settings refused (a name or codec the server rejects),
  a server certificate it does not trust (TlsError), or `Backoff.give_up_after_s` of
  failing in a row. `run` raises that error, with a message that says so.

Everything else it outlives. A lost connection (the server down or restarting) is retried
with capped, jittered backoff, forever by default, and logged once when lost and once when
back (`fedgate.core.retry`). A session the server no longer knows (it restarted without
the run, or dropped this client after a silence: SIGSTOP, a suspended laptop) is replaced
by joining again with the same enrolment key. A task that went stale meanwhile (its round
closed, its model version no longer served) is dropped, never replayed: the client asks
for the next one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fedgate.codecs import TensorDict, get_codec
from fedgate.core import delta
from fedgate.core.membership import (
    FATAL,
    SESSION_LOST,
    ClientReport,
    Membership,
    run_over,
)
from fedgate.core.messages import (
    EncodedModel,
    ModelWant,
    Task,
    TaskKind,
    TrainConfig,
    Update,
)
from fedgate.core.retry import Backoff
from fedgate.core.training import Trainer, TrainResult
from fedgate.core.transport import ModelOnTask, Session, Transport
from fedgate.errors import FedgateError, RunNotActive

__all__ = ["Backoff", "ClientReport", "FederatedClient", "HeldModel", "Membership"]

log = logging.getLogger("fedgate.client")


@dataclass(frozen=True)
class HeldModel:
    """The model this client holds, under the name the server knows it by."""

    ref: str
    weights: TensorDict


@dataclass(frozen=True)
class Trained:
    """One task's work, done on a worker thread: the model it started from, the result of
    training it and the update to send (with the residual error feedback carries on)."""

    start: HeldModel
    result: TrainResult
    payload: bytes
    residual: TensorDict


class FederatedClient:
    def __init__(
        self,
        transport: Transport,
        trainer: Trainer,
        name: str,
        codec: str,
        *,
        poll_s: float = 10.0,
        backoff: Backoff | None = None,
        deltas: bool | None = None,
        key: str = "",
        membership: Membership | None = None,
    ) -> None:
        """``membership``: one already kept (joined, perhaps, before the trainer was
        built); it must be on ``transport`` with this client's name, codec and number of
        examples. None: the client makes its own from ``name``, ``key`` and ``backoff``."""
        self.transport = transport
        self.trainer = trainer
        self.name = name
        self.codec = get_codec(codec)
        self.poll_s = poll_s
        self.membership = membership or Membership(
            transport, name, self.codec.name, trainer.num_examples, key=key, backoff=backoff
        )
        _check_fits(self.membership, self)
        # Deltas by default where they pay: a lossy codec loses precision on the change,
        # not on the weight. Error feedback then carries what it loses into the next round.
        self.deltas = self.codec.lossy if deltas is None else deltas
        self.report = self.membership.report
        self._held: HeldModel | None = None
        # the model the last task came with, kept apart from the task (it may be large)
        # until training takes it
        self._offered: EncodedModel | None = None
        self._residual: TensorDict = {}

    async def run(self) -> ClientReport:
        """Take part until the run ends (a STOP task) or this task is cancelled."""
        async with self.membership.kept():
            self.report.ended = await self._take_tasks()
            log.info("%s: %s", self.name, self.report.ended)
        return self.report

    async def _take_tasks(self) -> str:
        """Tasks until the run ends; returns why it ended."""
        while True:
            try:
                session = await self.membership.session()
            except RunNotActive as exc:
                return run_over(exc)
            try:
                task = await self._next_task(session)
                if task.kind is TaskKind.STOP:
                    return "the run is over: stopped by the server"
                if task.kind is TaskKind.TRAIN:
                    await self._take(session, task)
            except SESSION_LOST as exc:
                await self.membership.forget(session, exc)

    async def _next_task(self, session: Session) -> Task:
        self._offered = None
        try:
            task = await self.membership.reaching(self._task_request(session))
        except (*SESSION_LOST, *FATAL):
            raise
        except FedgateError as exc:  # not expected of a task request: wait, then ask again
            link = self.membership.link
            await asyncio.sleep(link.failed("the server refuses task requests", exc))
            return Task(TaskKind.WAIT)
        self.membership.answered()
        if task.model is not None:
            self._offered, task = task.model, dataclasses.replace(task, model=None)
        return task

    def _task_request(self, session: Session) -> Callable[[], Awaitable[Task]]:
        """The call that asks for the next task: with a TRAIN task's model on it where the
        transport can carry it (one request down a round), else the task alone."""
        transport = self.transport
        if not isinstance(transport, ModelOnTask):
            return lambda: transport.next_task(session, self.poll_s)
        want = ModelWant(self.codec.name, self._have_ref())
        return lambda: transport.next_task_with_model(session, self.poll_s, want)

    async def _take(self, session: Session, task: Task) -> None:
        """Train ``task``; if it went stale on the way, drop it (never replay it)."""
        try:
            await self._train(session, task)
        except FATAL:
            raise
        except FedgateError as exc:
            # its round closed, its model version is no longer served, its session is
            # gone, the update was refused: the next task is the one to take
            log.info("%s: dropping the task of round %d: %s", self.name, task.round, exc)
            self.report.dropped.append(exc.message)
            if isinstance(exc, SESSION_LOST):
                raise

    async def _train(self, session: Session, task: Task) -> None:
        assert task.train is not None
        offered = self._take_offered(task)
        if offered is not None:
            # the common case: one trip to a worker thread decodes, trains and encodes
            # (on a busy machine each trip back to the loop waits for a core)
            done = await asyncio.to_thread(self._decode_train_encode, offered, task.train)
        else:
            start = await self._fetch(session, task.model_version)
            done = await asyncio.to_thread(self._train_encode, start, task.train)
        self._held = done.start
        update = Update(
            round_id=task.round_id,
            model_version=task.model_version,
            num_examples=done.result.num_examples,
            codec=self.codec.name,
            payload=done.payload,
            train_loss=done.result.loss,
            base_ref=done.start.ref if self.deltas else "",
        )
        try:
            await self.membership.reaching(lambda: self.transport.submit_update(session, update))
        finally:
            self.report.bytes_up += len(done.payload)
        self._residual = done.residual
        self.report.rounds.append(task.round)
        log.info("%s: round %d sent (loss %.4f)", self.name, task.round, done.result.loss)

    def _take_offered(self, task: Task) -> EncodedModel | None:
        """The model ``task`` came with, if it is the one to train from and can be held."""
        offered, self._offered = self._offered, None
        if offered is None or offered.version != task.model_version:
            return None
        self.report.bytes_down += len(offered.payload)
        return offered if self._usable(offered) else None

    def _decode_train_encode(self, model: EncodedModel, config: TrainConfig) -> Trained:
        """Worker thread: the model a task came with, decoded, trained and encoded."""
        return self._train_encode(self._decoded(model), config)

    def _train_encode(self, start: HeldModel, config: TrainConfig) -> Trained:
        """Worker thread: ``start`` trained, and the update to send."""
        result = self.trainer.train(start.weights, config)
        payload, residual = self._encode(result.weights, start)
        return Trained(start, result, payload, residual)

    async def _fetch(self, session: Session, version: int) -> HeldModel:
        """The model to train from: a delta to what this client holds, or in full."""
        have = self._have_ref()
        model = await self.membership.reaching(
            lambda: self.transport.fetch_model(session, version, self.codec.name, have)
        )
        self.report.bytes_down += len(model.payload)
        if not self._usable(model):  # `_usable` forgot what is held: this fetch is in full
            return await self._fetch(session, version)
        self._held = await asyncio.to_thread(self._decoded, model)
        return self._held

    def _usable(self, model: EncodedModel) -> bool:
        """Whether ``model`` can be used: whole, or a delta to the model held here. A
        delta to another is not (and what is held is forgotten, so the next is whole)."""
        if model.base_ref and (self._held is None or model.base_ref != self._held.ref):
            log.warning("%s: got a delta to a model not held here; fetching in full", self.name)
            self._held = None
            return False
        return True

    def _decoded(self, model: EncodedModel) -> HeldModel:
        """Worker thread: the model held once ``model`` (whole, or a delta to the held
        one, see `_usable`) is decoded. The server names the codec it used: a whole model
        may come in a dense one."""
        decoded = get_codec(model.codec).decode(model.payload)
        if model.base_ref:
            assert self._held is not None
            decoded = delta.apply(self._held.weights, decoded)
        return HeldModel(model.ref, decoded)

    def _have_ref(self) -> str:
        """The model to ask for a delta to: the one held, with deltas on."""
        return self._held.ref if self.deltas and self._held is not None else ""

    def _encode(self, trained: TensorDict, start: HeldModel) -> tuple[bytes, TensorDict]:
        """Worker thread: the payload to send, and the residual to carry (error feedback)."""
        if not self.deltas:
            return self.codec.encode(trained), {}
        change = delta.difference(trained, start.weights)
        for name, carried in self._residual.items():
            change[name] = change[name] + carried
        payload = self.codec.encode(change)
        if not self.codec.lossy:
            return payload, {}
        sent = self.codec.decode(payload)
        return payload, {n: t - sent[n] for n, t in change.items() if t.is_floating_point()}


def _check_fits(membership: Membership, client: FederatedClient) -> None:
    """A membership made apart from the client (`fedgate.run.client_runner` joins before
    the trainer exists) must be the one the client would have made. Its codec is compared
    as the registry names it: the runner joins with the spelling it was given, before the
    codecs (and torch) are loaded."""
    codec = get_codec(membership.codec).name
    mine = (client.transport, client.name, client.codec.name, client.trainer.num_examples)
    theirs = (membership.transport, membership.name, codec, membership.num_examples)
    if mine != theirs:
        raise ValueError(
            f"{client.name}: the membership (transport, name, codec, examples) {theirs[1:]} "
            f"is not this client's {mine[1:]}"
        )
