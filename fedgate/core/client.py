"""The client loop: join, take tasks, train, send updates, heartbeat, leave.

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
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fedgate.codecs import TensorDict, get_codec
from fedgate.core import delta
from fedgate.core.messages import (
    EncodedModel,
    JoinRequest,
    ModelWant,
    Task,
    TaskKind,
    TrainConfig,
    Update,
)
from fedgate.core.retry import Backoff, Link
from fedgate.core.training import Trainer, TrainResult
from fedgate.core.transport import ModelOnTask, Session, Transport
from fedgate.errors import (
    BadRequest,
    CodecError,
    ConfigError,
    Conflict,
    FedgateError,
    Forbidden,
    Overloaded,
    RateLimited,
    RunNotActive,
    ServerError,
    StoreError,
    TlsError,
    TransportError,
    Unauthorized,
    UnknownClient,
    error_from_code,
)

__all__ = ["Backoff", "ClientReport", "FederatedClient", "HeldModel"]

log = logging.getLogger("fedgate.client")
T = TypeVar("T")

UNREACHABLE = "cannot reach the server"
# a session the server does not know (any more): joining again mends it
SESSION_LOST = (UnknownClient, Unauthorized)
# what no retry mends: raised out of `run` (transient TransportErrors never get this far)
FATAL = (Forbidden, TransportError)
# a join refused for the client's credentials or settings: asking again gets the same
JOIN_REFUSED = (Unauthorized, Forbidden, ConfigError, BadRequest, CodecError)


def transient(error: FedgateError) -> bool:
    """Worth asking again as it is: the connection, or the server's own failure."""
    if isinstance(error, TlsError):
        return False  # an untrusted certificate will not become trusted by asking again
    # the connection, the server's own failure, or its store (which may come back)
    return (
        isinstance(error, TransportError | ServerError | StoreError) or type(error) is FedgateError
    )


def trouble_of(error: FedgateError) -> str:
    """What a transient error says about the server, for the log (one line per change)."""
    if isinstance(error, RateLimited):
        return "the server limits this client's calls"
    if isinstance(error, Overloaded):
        return "the server is busy"
    if isinstance(error, TransportError):
        return UNREACHABLE
    return "the server fails"


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


@dataclass
class ClientReport:
    """What one client did, for logs and tests."""

    client_id: str = ""  # the id of its latest session
    rounds: list[int] = field(default_factory=list)  # rounds whose update was accepted
    # why tasks were dropped: stale (round closed, model version gone) or update refused
    dropped: list[str] = field(default_factory=list)
    rejoins: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    ended: str = ""  # why `run` returned ("" while it runs, or if it was cancelled)


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
    ) -> None:
        self.transport = transport
        self.key = key  # the enrolment key the client joins (and rejoins) with
        self.trainer = trainer
        self.name = name
        self.codec = get_codec(codec)
        self.poll_s = poll_s
        self.backoff = backoff or Backoff()
        self.link = Link(name, self.backoff)
        # Deltas by default where they pay: a lossy codec loses precision on the change,
        # not on the weight. Error feedback then carries what it loses into the next round.
        self.deltas = self.codec.lossy if deltas is None else deltas
        self.report = ClientReport()
        self._session: Session | None = None
        self._session_answered = False  # has the server taken a call on this session yet
        self._heartbeat_s = 2.0
        self._held: HeldModel | None = None
        # the model the last task came with, kept apart from the task (it may be large)
        # until training takes it
        self._offered: EncodedModel | None = None
        self._residual: TensorDict = {}

    async def run(self) -> ClientReport:
        """Take part until the run ends (a STOP task) or this task is cancelled."""
        heartbeats = asyncio.create_task(self._heartbeats())
        try:
            self.report.ended = await self._take_tasks()
            log.info("%s: %s", self.name, self.report.ended)
        finally:
            heartbeats.cancel()
            await self._leave()
        return self.report

    async def _take_tasks(self) -> str:
        """Tasks until the run ends; returns why it ended."""
        while True:
            try:
                session = await self._ensure_session()
            except RunNotActive as exc:
                return f"the run is over: {exc.message}"
            try:
                task = await self._next_task(session)
                if task.kind is TaskKind.STOP:
                    return "the run is over: stopped by the server"
                if task.kind is TaskKind.TRAIN:
                    await self._take(session, task)
            except SESSION_LOST as exc:
                await self._forget(session, exc)

    async def _next_task(self, session: Session) -> Task:
        self._offered = None
        try:
            task = await self._reaching(self._task_request(session))
        except (*SESSION_LOST, *FATAL):
            raise
        except FedgateError as exc:  # not expected of a task request: wait, then ask again
            await asyncio.sleep(self.link.failed("the server refuses task requests", exc))
            return Task(TaskKind.WAIT)
        self._session_answered = True
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
            await self._reaching(lambda: self.transport.submit_update(session, update))
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
        model = await self._reaching(
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

    async def _reaching(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until the server answers it: a lost connection (or a failure of the
        server's own) is waited out with backoff; any other error is the caller's."""
        while True:
            try:
                result = await call()
            except FedgateError as exc:
                if not transient(exc):
                    raise
                await asyncio.sleep(self.link.failed(trouble_of(exc), exc))
                continue
            self.link.succeeded()
            return result

    async def _ensure_session(self) -> Session:
        """The current session, joining (again) first if there is none."""
        request = JoinRequest(
            name=self.name,
            codec=self.codec.name,
            num_examples=self.trainer.num_examples,
            key=self.key,
        )
        while self._session is None:
            try:
                ack = await self._reaching(lambda: self.transport.join(request))
            except JOIN_REFUSED as exc:
                raise refused(self.name, exc) from None
            except (RunNotActive, *FATAL):
                raise
            except Conflict as exc:  # no room (the federation, or the key, is full): wait
                await asyncio.sleep(self.link.failed("no room to join", exc))
                continue
            except FedgateError as exc:  # unexpected of a join (a proxy's 404...): wait
                await asyncio.sleep(self.link.failed("the server refuses joins", exc))
                continue
            self._session, self._session_answered = Session.from_ack(ack), False
            self._heartbeat_s = ack.heartbeat_interval_s
            self.report.client_id = ack.client_id
            log.info("%s: joined run %s as %s", self.name, ack.run_id, ack.client_id)
        return self._session

    async def _forget(self, session: Session, error: FedgateError) -> None:
        """The server no longer knows ``session`` (and any task it held is stale): join
        again. One it forgot before answering a single call is not rejoined at once,
        so a server that keeps forgetting is not asked in a tight loop."""
        log.warning("%s: the server forgot this client (%s); joining again", self.name, error)
        if self._session is session:
            self._session = None
            self.report.rejoins += 1
        if not self._session_answered:
            await asyncio.sleep(self.link.failed("the server forgets this client", error))

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            session = self._session
            if session is None:
                continue
            try:
                await self.transport.heartbeat(session)
            except FedgateError as exc:  # the main loop deals with it on its next call
                if transient(exc):
                    self.link.noticed(trouble_of(exc), exc)
                log.debug("%s: heartbeat failed: %s", self.name, exc)
            else:
                self.link.succeeded()

    async def _leave(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        with contextlib.suppress(FedgateError, TimeoutError):
            async with asyncio.timeout(5.0):
                await self.transport.leave(session)


def refused(name: str, error: FedgateError) -> FedgateError:
    """``error``, told as the end of this client: what was refused, and that it gives up."""
    what = (
        "its enrolment key"
        if isinstance(error, Unauthorized | Forbidden)
        else "its settings (name, codec or size)"
    )
    return error_from_code(
        error.code,
        f"{name}: the server refused {what}: {error.message}; not retrying",
    )
