"""The Federation: the one object every transport adapter calls.

It answers clients (join, tasks, models, updates, heartbeats) and operators (pause,
resume, stop, config changes, kicks, status); the round loop is its `Scheduler`, the
run's phase and history its `Run`, and what must outlast the process goes to a `RunStore`
through a `Recorder`. Its methods are coroutines run on one event loop; decoding,
folding, encoding, evaluation and store writes go to worker threads. Clients may join or
leave at any moment; a round closes when every selected client has reported or dropped
out, or at its deadline if the minimum has reported, and is retried otherwise.

A federation may be resumed from a store (`Federation.resumed`): the last completed
round's model, the config, history, counters and client registry come back, tokens stay
valid, and the round that was open when the last process died is run again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import torch

from fedgate.codecs import Buffer, get_codec
from fedgate.core.accounts import Accounts
from fedgate.core.admission import Permit
from fedgate.core.changes import Changes
from fedgate.core.config import RunConfig
from fedgate.core.enrolment import Enrolment, EnrolmentMode, JoinLimits, KeyStore, KeyView
from fedgate.core.evaluation_process import EvaluationProcess
from fedgate.core.intake import IntakeLimits, UpdateIntake
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.messages import (
    ClientEvent,
    EncodedModel,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    RoundRecord,
    RunState,
    Task,
    TaskKind,
    Update,
    UpdateHeader,
    UpdateReceipt,
)
from fedgate.core.modelstore import ModelStore
from fedgate.core.observer import Observer, Observers
from fedgate.core.offload import CodecOffload
from fedgate.core.ports import ModelVersion, RoundCommit, RunMeta, RunStore, StoredRun
from fedgate.core.recorder import Recorder
from fedgate.core.registry import ClientRecord, ClientRegistry
from fedgate.core.rounds import Round
from fedgate.core.run import Run
from fedgate.core.scheduler import Evaluator, Scheduler
from fedgate.core.tasks import task_for
from fedgate.core.traffic import TrafficLedger
from fedgate.errors import FedgateError, RunNotActive

log = logging.getLogger("fedgate.federation")

MAX_POLL_S = 30.0  # longest a next-task long-poll is held open
RESUMED = "the server restarted; waiting for the client to come back"


class Federation:
    def __init__(
        self,
        initial_model: Mapping[str, torch.Tensor],
        config: RunConfig | None = None,
        *,
        evaluator: Evaluator | None = None,
        max_update_bytes: int = 1 << 31,
        max_concurrent_uploads: int = 32,
        max_clients: int = 10_000,
        run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        enrolment: EnrolmentMode | str = EnrolmentMode.OPEN,
        keys: KeyStore | None = None,
        join_limits: JoinLimits | None = None,
        accounts: Accounts | None = None,
        store: RunStore | None = None,
        meta: RunMeta | None = None,
        resume: StoredRun | None = None,
        observer: Observer | None = None,
        offload: CodecOffload | None = None,
    ) -> None:
        # Enrolment is open unless asked: in-process federations (tests, `sim --transport
        # inproc`) have no one to keep out. `fedgate serve` asks for keys by default.
        self.run_id = resume.meta.run_id if resume else run_id or secrets.token_hex(6)
        self.evaluator = evaluator
        self.clock = clock
        self.changes = Changes()
        self.store = store or InMemoryRunStore()
        self.recorder = Recorder(self.store, self.run_id)
        self.clients = ClientRegistry(max_clients, clock, journal=self._client_changed)
        self.enrolment = Enrolment(
            enrolment,
            keys,
            active_clients=self.clients.active_by_key,
            limits=join_limits,
            clock=clock,
        )
        self.accounts = accounts or Accounts(clock=clock)  # who may operate this federation
        config = config or RunConfig()
        self._run = Run(
            self.run_id, config, self.changes, self.recorder, rng=random.Random(config.seed)
        )
        if resume is None:
            self.models = ModelStore(initial_model)
            self.traffic = TrafficLedger()
            meta = meta or RunMeta(self.run_id)
            meta = dataclasses.replace(meta, run_id=self.run_id, created_at=time.time())
            snapshot = self._run.snapshot(0, {}, {})
            self.recorder.create_run(meta, snapshot, ModelVersion.of(0, self.models.current))
        else:
            self._take_back(resume)
        # who measures the run (metrics; `fedgate.core.observer`): more join before it starts
        self.observers = Observers(observer)
        self.traffic.observer = self.models.observer = self.observers
        # GIL-bound codecs' work on large payloads goes to worker processes (`offload`,
        # the federation's own: `close` stops them; ``CodecOffload(workers=0)``: threads)
        self.offload = self.models.offload = offload or CodecOffload()
        self.intake = UpdateIntake(
            self.clients,
            self.models,
            self.traffic,
            self._run.open_round,
            offload=self.offload,
            observers=self.observers,
            limits=IntakeLimits(max_update_bytes, max_concurrent_uploads),
        )
        self.scheduler = Scheduler(
            self._run,
            self.clients,
            self.models,
            self.traffic,
            self.recorder,
            evaluator=evaluator,
            clock=clock,
            observer=self.observers,
        )
        self._tasks: list[asyncio.Task[Any]] = []

    @classmethod
    def resumed(cls, stored: StoredRun, **options: Any) -> Federation:
        """The run ``stored`` carried on where it stopped (pass the store it came from)."""
        return cls(stored.model.weights, stored.snapshot.config, resume=stored, **options)

    def _take_back(self, stored: StoredRun) -> None:
        snap = stored.snapshot
        self.models = ModelStore(stored.model.weights, version=stored.model.version)
        self.traffic = TrafficLedger(snap.bytes_by_transport, snap.bytes_by_codec)
        self.clients.restore(stored.clients, RESUMED)
        cut = self._run.restore(stored)
        if cut is not None:  # the round the last process died in: recorded as abandoned
            snapshot = self._run.snapshot(
                self.models.version, self.traffic.by_transport, self.traffic.by_codec
            )
            clients = tuple(c.stored() for c in self.clients)
            self.recorder.commit_round_soon(RoundCommit(snapshot, cut, None, clients))

    # ---- state shared with the scheduler, read-only here -------------------------------

    @property
    def config(self) -> RunConfig:
        return self._run.config

    @property
    def pending_config(self) -> RunConfig | None:
        return self._run.pending_config

    @property
    def state(self) -> RunState:
        return self._run.phase

    @property
    def round(self) -> Round | None:
        """The round attempt open now, if any."""
        return self._run.open_round()

    @property
    def round_number(self) -> int:
        return self._run.round_number

    @property
    def history(self) -> list[RoundRecord]:
        return self._run.history

    # ---- client operations ------------------------------------------------------------

    async def join(self, request: JoinRequest) -> JoinAck:
        if not self._run.active:
            raise RunNotActive(f"run {self.run_id} has {self.state.value}; nothing to join")
        grant = self.enrolment.admit(request.key, request.peer, request.num_examples)
        get_codec(request.codec)
        joined = self.clients.add(
            request.name,
            request.codec,
            request.transport,
            request.num_examples,
            key_id=grant.key_id,
            max_num_examples=grant.max_num_examples,
        )
        record = joined.record
        return JoinAck(
            client_id=record.client_id,
            token=joined.token,
            run_id=self.run_id,
            codec=record.codec,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
        )

    async def next_task(
        self,
        client_id: str,
        token: str,
        wait_s: float = MAX_POLL_S,
        want: ModelWant | None = None,
    ) -> Task:
        """The client's next task, waiting up to ``wait_s`` for one (long-poll).

        With ``want``, a TRAIN task comes with its model as `fetch_model` would send it
        (so a round costs one request down): that codec and delta base, counted alike."""
        record = self.clients.authenticate(client_id, token)
        if want is not None:
            get_codec(want.codec or record.codec)  # refused before a task is taken
        give_up = self.clock() + max(0.0, min(wait_s, MAX_POLL_S))
        while True:
            task = task_for(self._run, record, self.clock())
            if task is not None:
                return await self._with_model(record, task, want)
            remaining = give_up - self.clock()
            if remaining <= 0:
                return Task(TaskKind.WAIT)
            await self.changes.wait_for_run(remaining, first=record.num_examples)
            record = self.clients.authenticate(client_id, token)

    async def fetch_model(
        self,
        client_id: str,
        token: str,
        version: int,
        codec: str | None = None,
        have_ref: str = "",
    ) -> EncodedModel:
        """A model version in ``codec`` (default: the client's), as a delta to ``have_ref``
        when the server still knows that model, else in full."""
        record = self.clients.authenticate(client_id, token)
        return await self._hand_out(record, version, codec or record.codec, have_ref)

    async def _hand_out(
        self, record: ClientRecord, version: int, codec_name: str, have_ref: str
    ) -> EncodedModel:
        """A model as a client gets it, counted in the byte ledgers as it leaves."""
        model = await self.models.encoded(version, codec_name, have_ref)
        self.traffic.count(record, codec_name, self.round, down=len(model.payload))
        return model

    async def _with_model(self, record: ClientRecord, task: Task, want: ModelWant | None) -> Task:
        """``task`` with its model attached, if it is a TRAIN task and the client asked.

        The task is already the client's: should its model fail to encode, the task goes
        out without one, and the client's fallback (`fetch_model`) meets the error."""
        if want is None or task.kind is not TaskKind.TRAIN:
            return task
        try:
            model = await self._hand_out(
                record, task.model_version, want.codec or record.codec, want.have_ref
            )
        except FedgateError as exc:
            log.warning("task for %s goes out without its model: %s", record.client_id, exc)
            return task
        return dataclasses.replace(task, model=model)

    async def submit_update(self, client_id: str, token: str, update: Update) -> UpdateReceipt:
        """An update whose payload is already at hand (the in-process transport)."""
        permit = await self.begin_update(client_id, token, update.header, len(update.payload))
        return await self.finish_update(permit, update.payload)

    async def begin_update(
        self, client_id: str, token: str, header: UpdateHeader, size: int | None = None
    ) -> Permit:
        """Check an upload from its header alone (`UpdateIntake.begin`)."""
        return await self.intake.begin(client_id, token, header, size)

    async def finish_update(self, permit: Permit, payload: Buffer) -> UpdateReceipt:
        """Decode, check and fold the body of an upload `begin_update` admitted."""
        return await self.intake.finish(permit, payload)

    def abandon_update(self, permit: Permit) -> None:
        """An upload that ended without an update: the client may still send a good one."""
        self.intake.abandon(permit)

    def authenticate(self, client_id: str, token: str) -> None:
        """Raise unless ``token`` is this live client's (adapters check before reading)."""
        self.clients.authenticate(client_id, token)

    async def heartbeat(self, client_id: str, token: str) -> HeartbeatAck:
        record = self.clients.authenticate(client_id, token)
        return HeartbeatAck(state=record.state, run_state=self.state)

    async def leave(self, client_id: str, token: str) -> None:
        record = self.clients.authenticate(client_id, token)
        self._run.drop_client(record, "left")

    # ---- operator controls ------------------------------------------------------------

    def start(self) -> asyncio.Task[FederationStatus]:
        """Run the federation in the background; returns the task that ends with it."""
        if self._tasks:
            raise RunNotActive(f"run {self.run_id} has already started")
        run = asyncio.create_task(self.run(), name=f"fedgate-run-{self.run_id}")
        self._tasks = [run, asyncio.create_task(self.scheduler.watch_heartbeats())]
        return run

    async def run(self) -> FederationStatus:
        """Run rounds until the configured rounds are done or the run is stopped."""
        await self.scheduler.run_rounds()
        return self.status()

    def pause(self) -> None:
        """No new round opens until `resume`; the open round runs to its end."""
        self._run.pause()

    def resume(self) -> None:
        self._run.resume()

    def stop(self) -> None:
        """End the run now; an open round is abandoned and the model stays as it was."""
        self._run.stop()

    def update_config(self, changes: Mapping[str, Any]) -> RunConfig:
        """Validate ``changes`` now; they take effect when the next round opens."""
        return self._run.change_config(changes)

    def kick(self, client_id: str, reason: str = "removed by operator") -> None:
        record = self.clients.get(client_id)
        if not record.gone:
            self._run.drop_client(record, reason)

    def revoke_key(self, key_id: str) -> KeyView:
        """Revoke an enrolment key: the clients that joined with it leave the run now."""
        self.enrolment.revoke(key_id)
        for record in self.clients.active_under(key_id):
            self._run.drop_client(record, "enrolment key revoked")
        return self.enrolment.get(key_id)

    async def close(self) -> None:
        """Cancel background tasks (the run, heartbeat watch), write what is pending to
        the store and stop the codec and evaluation worker processes; for shutdown."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.to_thread(self.recorder.close)
        finally:
            await asyncio.to_thread(self.offload.close)  # its worker processes end here
            if isinstance(self.evaluator, EvaluationProcess):
                await asyncio.to_thread(self.evaluator.close)

    def status(self) -> FederationStatus:
        run, last = self._run, self._run.last_eval
        in_progress = run.round_in_progress()
        return FederationStatus(
            run_id=self.run_id,
            state=run.phase,
            round=run.round_number,
            rounds_completed=run.rounds_completed,
            model_version=self.models.version,
            config=run.config,
            pending_config=run.pending_config,
            clients=self.clients.views(),
            history=tuple(run.history),
            bytes_by_transport=dict(self.traffic.by_transport),
            bytes_by_codec=dict(self.traffic.by_codec),
            accuracy=last.accuracy if last else math.nan,
            loss=last.loss if last else math.nan,
            open_round=None if in_progress is None else in_progress.view(self.clock()),
        )

    async def watch(self, min_interval_s: float = 0.25) -> AsyncGenerator[FederationStatus, None]:
        """Status now, then again after every change (at most every ``min_interval_s``),
        each with every client transition since the last one."""
        seen = self.changes.last_seq
        while True:
            events = self.changes.events_since(seen)
            seen, mark = self.changes.last_seq, self.changes.notified
            yield dataclasses.replace(self.status(), events=events)
            if not self._run.active:
                return
            # what changed while the consumer held that status is not waited for again
            await self.changes.wait(MAX_POLL_S, since=mark)
            await asyncio.sleep(min_interval_s)

    async def wait_for_change(self, at_most_s: float) -> None:
        """Return at the next change of state, or after ``at_most_s`` seconds."""
        await self.changes.wait(at_most_s)

    # ---- helpers ------------------------------------------------------------------------

    def _client_changed(self, record: ClientRecord, event: ClientEvent) -> None:
        """Every client transition: to watchers, and to the store."""
        self.recorder.client_changed(record.stored(), event)
        self.changes.client_event(event)
