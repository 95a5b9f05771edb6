"""The Federation: one object that every transport adapter calls.

It owns the client registry, the global model versions and the rounds. Its methods are
coroutines run on one event loop; decoding, folding, encoding and evaluation go to worker
threads. Clients may join or leave at any moment; a round closes when every selected
client has reported or dropped out, or at its deadline if the minimum has reported, and
is retried otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import torch

from fedgate.codecs import get_codec
from fedgate.core.accounts import Accounts
from fedgate.core.admission import Permit, admit, decode_and_fold
from fedgate.core.budget import UploadBudget
from fedgate.core.config import RunConfig
from fedgate.core.enrolment import Enrolment, EnrolmentMode, JoinLimits, KeyStore, KeyView
from fedgate.core.guard import fit_selection, open_aggregator
from fedgate.core.messages import (
    FINAL_RUN_STATES,
    ClientState,
    EncodedModel,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    RoundRecord,
    RunState,
    Task,
    TaskKind,
    TrainConfig,
    Update,
    UpdateHeader,
    UpdateReceipt,
)
from fedgate.core.modelstore import ModelStore
from fedgate.core.registry import ClientRecord, ClientRegistry
from fedgate.core.rounds import Round
from fedgate.core.strategy import get_strategy
from fedgate.core.traffic import TrafficLedger
from fedgate.core.training import EvalResult
from fedgate.errors import Overloaded, RunNotActive

MAX_POLL_S = 30.0  # longest a next-task long-poll is held open
TICK_S = 0.5  # how often waits re-check deadlines and heartbeats
# A selected client unheard of for this many heartbeat intervals leaves the open round.
ROUND_SILENCE_BEATS = 2.5
MIN_SILENCE_S = 1.0

Evaluator = Callable[[Mapping[str, torch.Tensor]], EvalResult]
RoundListener = Callable[[RoundRecord], None]


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
    ) -> None:
        # Enrolment is open unless asked: in-process federations (tests, `sim --transport
        # inproc`) have no one to keep out. `fedgate serve` asks for keys by default.
        self.run_id = run_id or secrets.token_hex(6)
        self.config = config or RunConfig()
        self.pending_config: RunConfig | None = None
        self.evaluator = evaluator
        self.max_update_bytes = max_update_bytes
        self.max_concurrent_uploads = max_concurrent_uploads
        self._uploads = 0  # uploads admitted whose body is not yet folded or refused
        self.clock = clock
        self.models = ModelStore(initial_model)
        self.uploads = UploadBudget(self.models)
        self.clients = ClientRegistry(max_clients, clock)
        self.enrolment = Enrolment(
            enrolment,
            keys,
            active_clients=self.clients.active_by_key,
            limits=join_limits,
            clock=clock,
        )
        self.accounts = accounts or Accounts(clock=clock)  # who may operate this federation
        self.traffic = TrafficLedger()
        self.history: list[RoundRecord] = []
        self.listeners: list[RoundListener] = []
        self.state = RunState.IDLE
        self.round: Round | None = None
        self.round_number = 1
        self._attempt = 1
        self._last_eval: EvalResult | None = None
        self._rng = random.Random(self.config.seed)
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    # ---- client operations ------------------------------------------------------------

    async def join(self, request: JoinRequest) -> JoinAck:
        if self.state in FINAL_RUN_STATES:
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
        self._notify()
        return JoinAck(
            client_id=record.client_id,
            token=joined.token,
            run_id=self.run_id,
            codec=record.codec,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
        )

    async def next_task(self, client_id: str, token: str, wait_s: float = MAX_POLL_S) -> Task:
        """The client's next task, waiting up to ``wait_s`` for one (long-poll)."""
        record = self.clients.authenticate(client_id, token)
        give_up = self.clock() + max(0.0, min(wait_s, MAX_POLL_S))
        while True:
            task = self._task_for(record)
            if task is not None:
                return task
            remaining = give_up - self.clock()
            if remaining <= 0:
                return Task(TaskKind.WAIT, retry_after_s=0.0)
            await self.wait_for_change(remaining)
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
        codec_name = codec or record.codec
        model = await self.models.encoded(version, codec_name, have_ref)
        self.traffic.count(record, codec_name, self._open_round(), down=len(model.payload))
        return model

    async def submit_update(self, client_id: str, token: str, update: Update) -> UpdateReceipt:
        """An update whose payload is already at hand (the in-process transport)."""
        permit = await self.begin_update(client_id, token, update.header, len(update.payload))
        return await self.finish_update(permit, update.payload)

    async def begin_update(
        self, client_id: str, token: str, header: UpdateHeader, size: int | None = None
    ) -> Permit:
        """Check an upload from its header alone, before any of its body is read.

        Adapters call this first, read at most ``permit.max_bytes`` body bytes, then call
        `finish_update` (or `abandon_update` if the body never arrives). ``size`` is the
        body size the client declared, when it declared one.
        """
        record = self.clients.authenticate(client_id, token)
        if self._uploads >= self.max_concurrent_uploads:
            raise Overloaded(f"{self._uploads} uploads are in progress (the limit); retry shortly")
        round_ = self._open_round()
        permit = admit(round_, record, header, self.models, self.max_update_bytes)
        self._hold(permit)
        try:
            limit = await self.uploads.body_limit(header.codec, permit.round.base_version)
            permit = dataclasses.replace(permit, max_bytes=min(limit, self.max_update_bytes))
            if size is not None:
                permit.check_size(size)
        except BaseException:
            self.abandon_update(permit)
            raise
        return permit

    async def finish_update(self, permit: Permit, payload: bytes) -> UpdateReceipt:
        """Decode, check and fold the body of an upload `begin_update` admitted."""
        round_, record, header = permit.round, permit.record, permit.header
        try:
            permit.check_size(len(payload))
            self.traffic.count(record, header.codec, round_, up=len(payload))
            await asyncio.to_thread(decode_and_fold, permit, payload)
        except BaseException:
            self.abandon_update(permit)
            raise
        self._release(permit)
        round_.reported[record.client_id] = header.num_examples
        if math.isfinite(header.train_loss):
            round_.train_losses.append(header.train_loss)
        record.state = ClientState.FINISHED
        record.rounds_completed += 1
        self._notify()
        return UpdateReceipt(
            round=round_.number, accepted=len(round_.reported), expected=len(round_.selected)
        )

    def abandon_update(self, permit: Permit) -> None:
        """An upload that ended without an update: the client may still send a good one."""
        if self._release(permit) and not permit.record.gone:
            permit.record.state = ClientState.TRAINING
            self._notify()

    def _hold(self, permit: Permit) -> None:
        permit.round.uploading.add(permit.record.client_id)
        permit.record.state = ClientState.UPLOADING
        self._uploads += 1
        self._notify()

    def _release(self, permit: Permit) -> bool:
        """Forget an upload in progress; False if it was already forgotten."""
        if permit.record.client_id not in permit.round.uploading:
            return False
        permit.round.uploading.discard(permit.record.client_id)
        self._uploads -= 1
        return True

    def authenticate(self, client_id: str, token: str) -> None:
        """Raise unless ``token`` is this live client's (adapters check before reading)."""
        self.clients.authenticate(client_id, token)

    async def heartbeat(self, client_id: str, token: str) -> HeartbeatAck:
        record = self.clients.authenticate(client_id, token)
        return HeartbeatAck(state=record.state, run_state=self.state)

    async def leave(self, client_id: str, token: str) -> None:
        record = self.clients.authenticate(client_id, token)
        self._drop(record, ClientState.LEFT, "left")

    # ---- operator controls ------------------------------------------------------------

    def start(self) -> asyncio.Task[FederationStatus]:
        """Run the federation in the background; returns the task that ends with it."""
        if self._tasks:
            raise RunNotActive(f"run {self.run_id} has already started")
        run = asyncio.create_task(self.run(), name=f"fedgate-run-{self.run_id}")
        self._tasks = [run, asyncio.create_task(self._watch_heartbeats())]
        return run

    def pause(self) -> None:
        """No new round opens until `resume`; the open round runs to its end."""
        self._require_active("pause")
        self.state = RunState.PAUSED
        self._notify()

    def resume(self) -> None:
        if self.state is not RunState.PAUSED:
            raise RunNotActive(f"run {self.run_id} is {self.state.value}, not paused")
        self.state = RunState.RUNNING if self._open_round() else RunState.WAITING
        self._notify()

    def stop(self) -> None:
        """End the run now; an open round is abandoned and the model stays as it was."""
        self._require_active("stop")
        self.state = RunState.STOPPED
        self._notify()

    def update_config(self, changes: Mapping[str, Any]) -> RunConfig:
        """Validate ``changes`` now; they take effect when the next round opens."""
        self._require_active("change the config of")
        self.pending_config = (self.pending_config or self.config).with_changes(changes)
        self._notify()
        return self.pending_config

    def kick(self, client_id: str, reason: str = "removed by operator") -> None:
        record = self.clients.get(client_id)
        if not record.gone:
            self._drop(record, ClientState.LEFT, reason)

    def revoke_key(self, key_id: str) -> KeyView:
        """Revoke an enrolment key: the clients that joined with it leave the run now."""
        self.enrolment.revoke(key_id)
        for record in self.clients.active_under(key_id):
            self._drop(record, ClientState.LEFT, "enrolment key revoked")
        return self.enrolment.get(key_id)

    async def close(self) -> None:
        """Cancel background tasks (the run, heartbeat watch); for shutdown."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> FederationStatus:
        last = self._last_eval
        return FederationStatus(
            run_id=self.run_id,
            state=self.state,
            round=self.round_number,
            rounds_completed=sum(1 for r in self.history if r.outcome == "completed"),
            model_version=self.models.version,
            config=self.config,
            pending_config=self.pending_config,
            clients=self.clients.views(),
            history=tuple(self.history),
            bytes_by_transport=dict(self.traffic.by_transport),
            bytes_by_codec=dict(self.traffic.by_codec),
            accuracy=last.accuracy if last else math.nan,
            loss=last.loss if last else math.nan,
        )

    async def watch(self, min_interval_s: float = 0.25) -> AsyncIterator[FederationStatus]:
        """Status now, then again after every change (at most every ``min_interval_s``)."""
        while True:
            yield self.status()
            if self.state in FINAL_RUN_STATES:
                return
            await self.wait_for_change(MAX_POLL_S)
            await asyncio.sleep(min_interval_s)

    # ---- the run ------------------------------------------------------------------------

    async def run(self) -> FederationStatus:
        """Open, wait for and close rounds until the configured rounds are done or stopped."""
        if self.state is RunState.IDLE:
            self.state = RunState.WAITING
        while self.state not in FINAL_RUN_STATES:
            if self.state is RunState.PAUSED:
                await self.wait_for_change(TICK_S)
                continue
            self._apply_pending_config()
            if self.round_number > self.config.rounds:
                self.state = RunState.FINISHED
                break
            round_ = await self._open_when_ready()
            if round_ is not None:
                await self._run_round(round_)
        self._notify()
        return self.status()

    async def _open_when_ready(self) -> Round | None:
        while self.state is RunState.WAITING:
            # Busy clients count too: one still on a closed round's task takes the new one
            # at its next poll, so a retry is not starved by the stragglers that caused it.
            active = [c.client_id for c in self.clients.active()]
            if len(active) >= self.config.min_clients:
                strategy = get_strategy(self.config.strategy)
                return self._open_round_with(strategy.select(active, self.config, self._rng))
            await self.wait_for_change(TICK_S)
        return None

    def _open_round_with(self, selected: list[str]) -> Round:
        now = self.clock()
        # the round's strategy and clipping are the config's, so they may change mid-run
        aggregator = open_aggregator(self.config, self.models.current)
        label = f"round {self.round_number}.{self._attempt}"
        selected = fit_selection(selected, aggregator.capacity, self._rng, label)
        aggregator.cap_weights([self.clients.get(c).num_examples for c in selected])
        self.round = Round(
            number=self.round_number,
            attempt=self._attempt,
            config=self.config,
            base_version=self.models.version,
            selected=set(selected),
            aggregator=aggregator,
            opened_at=now,
            deadline=now + self.config.round_deadline_s,
        )
        self.state = RunState.RUNNING
        self._notify()
        return self.round

    async def _run_round(self, round_: Round) -> None:
        while self.state is not RunState.STOPPED:
            if round_.accounted_for() or round_.cannot_reach_minimum():
                break
            remaining = round_.deadline - self.clock()
            if remaining <= 0:
                break
            await self.wait_for_change(min(remaining, TICK_S))
        round_.close()
        if self.state is RunState.STOPPED:
            self._finish_round(round_, "abandoned")
        elif round_.reached_minimum():
            await self._complete(round_)
        else:
            self._finish_round(round_, "retried")
            self._attempt += 1
        if self.state is RunState.RUNNING:
            self.state = RunState.WAITING

    async def _complete(self, round_: Round) -> None:
        weights, refusal = await asyncio.to_thread(round_.checked_result)
        if refusal is not None:
            # Never published: the offenders are dropped (they must join again to take
            # part; status shows why) and the round is retried by the others at once.
            round_.excluded, round_.reason = refusal.offenders, refusal.reason
            why = f"excluded from round {round_.round_id}: {refusal.reason}"
            for record in list(self.clients):
                if record.client_id in refusal.offenders and not record.gone:
                    self._drop(record, ClientState.FAILED, why)
            self._finish_round(round_, "retried")
            self._attempt += 1
            return
        self.models.publish(weights)
        if self.evaluator is not None:
            self._last_eval = await asyncio.to_thread(self.evaluator, weights)
        self._finish_round(round_, "completed")
        self.round_number += 1
        self._attempt = 1

    def _finish_round(self, round_: Round, outcome: str) -> None:
        last = self._last_eval if outcome == "completed" else None
        record = round_.record(
            outcome,
            self.models.version,
            self.clock(),
            accuracy=last.accuracy if last else math.nan,
            loss=last.loss if last else math.nan,
        )
        self.history.append(record)
        self.round = None
        for listener in self.listeners:
            listener(record)
        self._notify()

    # ---- helpers ------------------------------------------------------------------------

    def _task_for(self, record: ClientRecord) -> Task | None:
        """A task if there is one for this client now, else None (and the client is ready)."""
        if self.state in FINAL_RUN_STATES:
            return Task(TaskKind.STOP)
        round_ = self._open_round()
        if round_ is not None and self._admit_late(round_, record):
            round_.selected.add(record.client_id)
        if round_ is not None and record.client_id in round_.pending():
            record.state = ClientState.TRAINING
            cfg = round_.config
            return Task(
                TaskKind.TRAIN,
                round=round_.number,
                round_id=round_.round_id,
                model_version=round_.base_version,
                deadline_s=max(0.0, round_.deadline - self.clock()),
                train=TrainConfig(cfg.learning_rate, cfg.local_epochs, cfg.batch_size),
            )
        record.state = ClientState.READY
        return None

    def _admit_late(self, round_: Round, record: ClientRecord) -> bool:
        return (
            round_.config.admit_late
            and round_.has_room()
            and record.client_id not in round_.selected
            and record.state in (ClientState.JOINED, ClientState.READY)
        )

    def _open_round(self) -> Round | None:
        round_ = self.round
        return round_ if round_ is not None and not round_.closed else None

    def _drop(self, record: ClientRecord, state: ClientState, reason: str) -> None:
        record.state, record.reason = state, reason
        round_ = self._open_round()
        if round_ is not None and record.client_id in round_.pending():
            round_.dropped.add(record.client_id)
        self._notify()

    async def _watch_heartbeats(self) -> None:
        while self.state not in FINAL_RUN_STATES:
            timeout = self.config.heartbeat_timeout_s
            for record in self.clients.expired(timeout):
                self._drop(record, ClientState.FAILED, f"no heartbeat for {timeout:g}s")
            self._drop_silent_participants()
            await self.wait_for_change(min(TICK_S, self.config.heartbeat_interval_s))

    def _drop_silent_participants(self) -> None:
        """Take selected clients that went quiet out of the open round, long before their
        heartbeat timeout fails them, so the round closes with the others instead of
        waiting for its deadline (a client that joins and never trains cannot hold
        every round up). They stay joined and may take part in a later round."""
        round_ = self._open_round()
        if round_ is None:
            return
        silence = max(ROUND_SILENCE_BEATS * self.config.heartbeat_interval_s, MIN_SILENCE_S)
        limit = self.clock() - silence
        waiting = round_.pending() - round_.uploading  # once, not once per client
        quiet = [
            record
            for record in self.clients.active()
            if record.client_id in waiting and max(record.last_seen, round_.opened_at) < limit
        ]
        for record in quiet:  # its state stays: it may yet send heartbeats, or fail
            round_.dropped.add(record.client_id)
            record.reason = f"dropped from round {round_.round_id}: silent for {silence:g}s"
        if quiet:
            self._notify()

    def _apply_pending_config(self) -> None:
        if self.pending_config is not None:
            self.config, self.pending_config = self.pending_config, None

    def _require_active(self, action: str) -> None:
        if self.state in FINAL_RUN_STATES:
            raise RunNotActive(f"cannot {action} run {self.run_id}: it has {self.state.value}")

    def _notify(self) -> None:
        """Wake every waiter (long-polls, the run loop): something changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, at_most_s: float) -> None:
        """Return at the next change of state, or after ``at_most_s`` seconds."""
        event = self._changed
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await event.wait()
