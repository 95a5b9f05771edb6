"""The client loop: join, take tasks, train, send updates, heartbeat, leave.

It runs over any `Transport`. It survives what a real network does: a lost connection is
retried with exponential backoff, a federation that forgot the client (it was marked
failed) is joined again, and an update refused because its round closed is dropped so the
client goes on with the next round. Cancel the task running `run` to stop: the client
leaves cleanly on its way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fedgate.codecs import TensorDict, get_codec
from fedgate.core import delta
from fedgate.core.messages import JoinRequest, Task, TaskKind, Update
from fedgate.core.training import Trainer
from fedgate.core.transport import Session, Transport
from fedgate.errors import (
    Conflict,
    FedgateError,
    InvalidUpdate,
    TlsError,
    TransportError,
    UnknownClient,
)

log = logging.getLogger("fedgate.client")
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.2
    max_s: float = 10.0
    max_attempts: int = 30  # consecutive failures before the client gives up

    def delay(self, attempt: int) -> float:
        return float(min(self.max_s, self.initial_s * 2**attempt))


@dataclass(frozen=True)
class HeldModel:
    """The model this client holds, under the name the server knows it by."""

    ref: str
    weights: TensorDict


@dataclass
class ClientReport:
    """What one client did, for logs and tests."""

    client_id: str = ""
    rounds: list[int] = field(default_factory=list)  # rounds whose update was accepted
    refused: list[str] = field(default_factory=list)  # why updates were refused
    rejoins: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


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
        # Deltas by default where they pay: a lossy codec loses precision on the change,
        # not on the weight. Error feedback then carries what it loses into the next round.
        self.deltas = self.codec.lossy if deltas is None else deltas
        self.report = ClientReport()
        self._session: Session | None = None
        self._heartbeat_s = 2.0
        self._held: HeldModel | None = None
        self._residual: TensorDict = {}

    async def run(self) -> ClientReport:
        """Take part until the run ends (a STOP task) or this task is cancelled."""
        heartbeats = asyncio.create_task(self._heartbeats())
        try:
            while (task := await self._retrying(self._next_task)).kind is not TaskKind.STOP:
                if task.kind is TaskKind.TRAIN:
                    await self._retrying(functools.partial(self._train, task))
        finally:
            heartbeats.cancel()
            await self._leave()
        return self.report

    async def _next_task(self) -> Task:
        return await self.transport.next_task(await self._ensure_session(), self.poll_s)

    async def _train(self, task: Task) -> None:
        session = await self._ensure_session()
        assert task.train is not None
        start = await self._fetch(session, task.model_version)
        result = await asyncio.to_thread(self.trainer.train, start.weights, task.train)
        payload, residual = await asyncio.to_thread(self._encode, result.weights, start)
        update = Update(
            round_id=task.round_id,
            model_version=task.model_version,
            num_examples=result.num_examples,
            codec=self.codec.name,
            payload=payload,
            train_loss=result.loss,
            train_accuracy=result.accuracy,
            base_ref=start.ref if self.deltas else "",
        )
        try:
            await self.transport.submit_update(session, update)
        except (Conflict, InvalidUpdate) as exc:
            # the round moved on without us, or the server refused the update: next round
            log.info("%s: update for round %s refused: %s", self.name, task.round_id, exc)
            self.report.refused.append(exc.message)
            return
        finally:
            self.report.bytes_up += len(payload)
        self._residual = residual
        self.report.rounds.append(task.round)
        log.info("%s: round %d sent (loss %.4f)", self.name, task.round, result.loss)

    async def _fetch(self, session: Session, version: int) -> HeldModel:
        """The model to train from: a delta to what this client holds, or in full."""
        have = self._held.ref if self.deltas and self._held is not None else ""
        model = await self.transport.fetch_model(session, version, self.codec.name, have)
        self.report.bytes_down += len(model.payload)
        # the server names the codec it used: a whole model may come in a dense one
        decoded = await asyncio.to_thread(get_codec(model.codec).decode, model.payload)
        if model.base_ref:
            if self._held is None or model.base_ref != self._held.ref:
                log.warning("%s: got a delta to a model not held here; fetching in full", self.name)
                self._held = None
                return await self._fetch(session, version)
            decoded = await asyncio.to_thread(delta.apply, self._held.weights, decoded)
        self._held = HeldModel(model.ref, decoded)
        return self._held

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

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call``; on a lost connection back off and retry, on a forgotten id rejoin."""
        failures = 0
        while True:
            try:
                return await call()
            except UnknownClient as exc:
                log.warning("%s: %s; joining again", self.name, exc)
                self._session = None
                self.report.rejoins += 1
            except TransportError as exc:
                # an untrusted certificate will not become trusted by asking again
                if failures >= self.backoff.max_attempts or isinstance(exc, TlsError):
                    raise
                delay = self.backoff.delay(failures)
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
                failures += 1
                await asyncio.sleep(delay)

    async def _ensure_session(self) -> Session:
        if self._session is None:
            request = JoinRequest(
                name=self.name,
                codec=self.codec.name,
                num_examples=self.trainer.num_examples,
                key=self.key,
            )
            ack = await self.transport.join(request)
            self._session = Session.from_ack(ack)
            self._heartbeat_s = ack.heartbeat_interval_s
            self.report.client_id = ack.client_id
            log.info("%s: joined run %s as %s", self.name, ack.run_id, ack.client_id)
        return self._session

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if self._session is None:
                continue
            try:
                await self.transport.heartbeat(self._session)
            except FedgateError as exc:  # the main loop deals with it on its next call
                log.debug("%s: heartbeat failed: %s", self.name, exc)

    async def _leave(self) -> None:
        if self._session is None:
            return
        with contextlib.suppress(FedgateError, TimeoutError):
            async with asyncio.timeout(5.0):
                await self.transport.leave(self._session)
        self._session = None
