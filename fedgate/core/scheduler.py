"""The round loop: open a round when enough clients are there, close it when every
selected client has reported or dropped out (or at its deadline), publish or retry, and
write the round to the store before the next one opens.

A published model is evaluated on the held-out split off the critical path: the next
round opens as soon as the round is committed, while the evaluation runs on a worker
thread; its record joins the history (and its accuracy the store) when it is done. One
evaluation at a time: the next round's close, and the run's end, wait for it first, so
records and commits stay in round order and only the latest round can lack its
evaluation after a crash (evaluated again when the run is resumed).

Also the watch on clients' signs of life: clients silent past their heartbeat timeout
fail, and selected clients silent for a few heartbeat intervals leave the open round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping

import torch

from fedgate.core.guard import Refusal, fit_selection, open_aggregator
from fedgate.core.messages import RoundOutcome, RoundRecord, RunState
from fedgate.core.modelstore import ModelStore
from fedgate.core.observer import NULL_OBSERVER, Observer
from fedgate.core.ports import ModelVersion, RoundCommit, RoundEvaluation, TensorDict
from fedgate.core.recorder import Recorder
from fedgate.core.registry import ClientRegistry
from fedgate.core.rounds import Round
from fedgate.core.run import Run
from fedgate.core.strategy import get_strategy
from fedgate.core.traffic import TrafficLedger
from fedgate.core.training import EvalResult

TICK_S = 0.5  # how often waits re-check deadlines and heartbeats
# A selected client unheard of for this many heartbeat intervals leaves the open round.
ROUND_SILENCE_BEATS = 2.5
MIN_SILENCE_S = 1.0
# A round's close held this long by the last round's evaluation is told to the operator
# (once a minute at most): that evaluation is slower than a round, and holds every one.
EVALUATION_WAIT_WARN_S = 1.0
EVALUATION_WARN_EVERY_S = 60.0

Evaluator = Callable[[Mapping[str, torch.Tensor]], EvalResult]
log = logging.getLogger("fedgate.scheduler")


@dataclasses.dataclass(frozen=True)
class Concluded:
    """A completed round's outcome, worked out off the loop: the model it publishes and
    the strategy's state to keep."""

    model: ModelVersion
    state: dict[str, torch.Tensor]


class Scheduler:
    def __init__(
        self,
        run: Run,
        clients: ClientRegistry,
        models: ModelStore,
        traffic: TrafficLedger,
        recorder: Recorder,
        *,
        evaluator: Evaluator | None,
        clock: Callable[[], float],
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.run = run
        self.clients = clients
        self.models = models
        self.traffic = traffic
        self.recorder = recorder
        self.evaluator = evaluator
        self.clock = clock
        self.observer = observer  # told each closed round, aggregation and evaluation
        self._evaluation: asyncio.Task[None] | None = None  # the last round's, if running
        self._warned_at = -math.inf  # time.monotonic() of the last evaluation-wait warning

    async def run_rounds(self) -> None:
        """Open, wait for and close rounds until the configured rounds are done or stopped."""
        run = self.run
        run.begin()
        try:
            await self._evaluate_restored()
            while run.active:
                if run.phase is RunState.PAUSED:
                    await run.changes.wait(TICK_S)
                    continue
                run.apply_pending_config()
                if run.round_number > run.config.rounds:
                    await self._settle()  # the run ends with its last round's evaluation
                    run.finish()
                    break
                round_ = await self._open_when_ready()
                if round_ is not None:
                    await self._run_round(round_)
            await self._settle()  # stopped between rounds
        finally:
            if self._evaluation is not None:  # cancelled (shutdown): none outlives the loop
                self._evaluation.cancel()
        await self.recorder.flush()

    async def _open_when_ready(self) -> Round | None:
        run = self.run
        while run.phase is RunState.WAITING:
            # Busy clients count too: one still on a closed round's task takes the new one
            # at its next poll, so a retry is not starved by the stragglers that caused it.
            available = [c.client_id for c in self.clients.available()]
            if len(available) >= run.config.min_clients:
                strategy = get_strategy(run.config.strategy)
                return self._open_round_with(strategy.select(available, run.config, run.rng))
            await run.changes.wait(TICK_S)
        return None

    def _open_round_with(self, selected: list[str]) -> Round:
        run, now = self.run, self.clock()
        # the round's strategy and clipping are the config's, so they may change mid-run
        aggregator = open_aggregator(run.config, self.models.current)
        label = f"round {run.round_number}.{run.attempt}"
        selected = fit_selection(selected, aggregator.capacity, run.rng, label)
        aggregator.cap_weights([self.clients.get(c).num_examples for c in selected])
        round_ = Round(
            number=run.round_number,
            attempt=run.attempt,
            config=run.config,
            base_version=self.models.version,
            selected=set(selected),
            aggregator=aggregator,
            opened_at=now,
            deadline=now + run.config.round_deadline_s,
        )
        run.round_opened(round_)
        return round_

    async def _run_round(self, round_: Round) -> None:
        run = self.run
        while run.phase is not RunState.STOPPED:
            if round_.accounted_for() or round_.cannot_reach_minimum():
                break
            remaining = round_.deadline - self.clock()
            if remaining <= 0:
                break
            await run.changes.wait(min(remaining, TICK_S))
        round_.close()
        if run.phase is RunState.STOPPED:
            await self._close(round_, RoundOutcome.ABANDONED)
        elif round_.reached_minimum():
            await self._complete(round_)
        else:
            await self._close(round_, RoundOutcome.RETRIED)

    async def _complete(self, round_: Round) -> None:
        started = time.perf_counter()  # updates were folded as they came: this is the rest
        concluded = await asyncio.to_thread(self._conclude, round_, self.models.version + 1)
        if isinstance(concluded, Refusal):
            # Never published: the offenders are dropped (they must join again to take
            # part; status shows why) and the round is retried by the others at once.
            round_.refuse(concluded.offenders, concluded.reason)
            why = f"excluded from round {round_.round_id}: {concluded.reason}"
            for record in self.clients:
                if record.client_id in concluded.offenders and not record.gone:
                    self.run.drop_client(record, why, failed=True)
            await self._close(round_, RoundOutcome.RETRIED)
            return
        self.observer.aggregated(round_.config.strategy, time.perf_counter() - started)
        version = self.models.publish(concluded.model.weights)
        assert version == concluded.model.version, "only the round loop publishes"
        self.models.prepare_next()  # encoded while the round is written, not once asked
        self.run.strategy_state = concluded.state
        for client_id in round_.reported:
            self.clients.get(client_id).rounds_completed += 1
        await self._close(round_, RoundOutcome.COMPLETED, concluded.model)

    def _conclude(self, round_: Round, version: int) -> Concluded | Refusal:
        """Worker thread: the round's checked aggregate, the strategy's step to the next
        model and that model as it is kept (hashed): one hop off the loop, not one each."""
        aggregate, refusal = round_.checked_result()
        if refusal is not None:
            return refusal
        strategy = get_strategy(round_.config.strategy)
        weights, state = strategy.finish(self.models.current, aggregate, self.run.strategy_state)
        return Concluded(ModelVersion.of(version, weights), state)

    async def _close(
        self, round_: Round, outcome: RoundOutcome, model: ModelVersion | None = None
    ) -> None:
        """Record the round and commit it (with ``model``, the version it published, when
        it completed), then start its evaluation."""
        run, closed_at = self.run, self.clock()
        await self._settle(holds_a_round=True)  # the last round's record goes first
        evaluating = model is not None and self.evaluator is not None  # a published model
        record = round_.record(
            outcome, self.models.version, closed_at, accuracy=math.nan, loss=math.nan
        )
        run.round_closed(record, evaluating=evaluating)
        if not evaluating:
            self.observer.round_closed(record)
        commit = RoundCommit(
            snapshot=run.snapshot(
                self.models.version, self.traffic.by_transport, self.traffic.by_codec
            ),
            record=record,
            model=model,
            clients=tuple(c.stored() for c in self.clients),
            strategy_state=dict(run.strategy_state),
        )
        await self.recorder.commit_round(commit)
        if model is not None and self.evaluator is not None:
            self._evaluation = asyncio.create_task(
                self._evaluate(record, model.weights), name=f"evaluation of round {record.round}"
            )

    # ---- evaluation, off the round's critical path ----------------------------------------

    async def _settle(self, *, holds_a_round: bool = False) -> None:
        """Wait for the last round's evaluation, if it is still running; a round's close
        (``holds_a_round``) tells how long it waited."""
        task, self._evaluation = self._evaluation, None
        if task is None:
            return
        started = time.perf_counter()
        await task
        if holds_a_round:
            self._waited_for(task.get_name(), time.perf_counter() - started)

    def _waited_for(self, evaluation: str, seconds: float) -> None:
        self.observer.evaluation_waited(seconds)
        now = time.monotonic()
        if seconds < EVALUATION_WAIT_WARN_S or now - self._warned_at < EVALUATION_WARN_EVERY_S:
            return
        self._warned_at = now
        log.warning(
            "run %s: a round's close waited %.1f s for the %s: evaluation is slower than a "
            "round, and holds every round (on a machine busy with other work, an evaluation "
            "at idle priority waits for CPU: `fedgate serve --evaluate-in thread`)",
            self.run.run_id,
            seconds,
            evaluation,
        )

    async def _evaluate(self, record: RoundRecord, weights: TensorDict) -> None:
        """Evaluate the model ``record``'s round published (while the next round runs);
        then the record, complete, joins the history and its evaluation the store."""
        record, result = await self._evaluated(record, weights)
        self.run.round_evaluated(record, result)
        self.observer.round_closed(record)
        self.recorder.evaluation(RoundEvaluation.of(record))

    async def _evaluate_restored(self) -> None:
        """A resumed run's last round, if the last process died before its evaluation was
        kept: evaluated (the model is the current one) before the first round opens."""
        record = self.run.unevaluated()
        if record is None or self.evaluator is None or record.model_version != self.models.version:
            return
        record, result = await self._evaluated(record, self.models.current)
        self.run.round_evaluated(record, result)
        self.recorder.evaluation(RoundEvaluation.of(record))

    async def _evaluated(
        self, record: RoundRecord, weights: TensorDict
    ) -> tuple[RoundRecord, EvalResult | None]:
        """``record`` with the held-out accuracy and loss of ``weights``, on a worker thread;
        a failed evaluation is logged and recorded in its reason, and the run goes on."""
        if self.evaluator is None:
            return record, None
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(self.evaluator, weights)
        except Exception as error:  # the model's own code: whatever it raises, rounds go on
            log.exception("run %s: evaluating round %s failed", self.run.run_id, record.round)
            why = f"evaluation failed: {error}"
            reason = f"{record.reason}; {why}" if record.reason else why
            return dataclasses.replace(record, reason=reason), None
        self.observer.evaluated(time.perf_counter() - started)
        return dataclasses.replace(record, accuracy=result.accuracy, loss=result.loss), result

    # ---- signs of life --------------------------------------------------------------------

    async def watch_heartbeats(self) -> None:
        run = self.run
        while run.active:
            timeout = run.config.heartbeat_timeout_s
            for record in self.clients.expired(timeout):
                run.drop_client(record, f"no heartbeat for {timeout:g}s", failed=True)
            self.drop_silent_participants()
            self.recorder.tick()
            await run.changes.wait(min(TICK_S, run.config.heartbeat_interval_s))

    def drop_silent_participants(self) -> None:
        """Take selected clients that went quiet out of the open round, long before their
        heartbeat timeout fails them, so the round closes with the others instead of
        waiting for its deadline (a client that joins and never trains cannot hold
        every round up). They stay joined and may take part in a later round."""
        round_ = self.run.open_round()
        if round_ is None:
            return
        silence = max(ROUND_SILENCE_BEATS * self.run.config.heartbeat_interval_s, MIN_SILENCE_S)
        limit = self.clock() - silence
        waiting = round_.pending() - round_.uploading  # once, not once per client
        quiet = [
            record
            for record in self.clients.active()
            if record.client_id in waiting and max(record.last_seen, round_.opened_at) < limit
        ]
        for record in quiet:  # its state stays: it may yet send heartbeats, or fail
            round_.drop(record.client_id)
            record.explain(f"dropped from round {round_.round_id}: silent for {silence:g}s")
        if quiet:
            self.run.changes.notify()
