"""A run's own state: its phase, config, rounds so far and history, and every change to them.

The phase is a small state machine (`RunState`): each change goes through a method here,
is recorded in the store and wakes waiters. The federation's client and operator calls
and the round scheduler share one `Run`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fedgate.core.changes import Changes
from fedgate.core.config import RunConfig
from fedgate.core.messages import FINAL_RUN_STATES, RoundOutcome, RoundRecord, RunState, Traffic
from fedgate.core.ports import ConfigChange, RunSnapshot, StoredRun
from fedgate.core.recorder import Recorder
from fedgate.core.registry import ClientRecord
from fedgate.core.rounds import Round
from fedgate.core.training import EvalResult
from fedgate.errors import RunNotActive


@dataclass
class Run:
    run_id: str
    config: RunConfig
    changes: Changes
    recorder: Recorder
    pending_config: RunConfig | None = None
    phase: RunState = RunState.IDLE
    round: Round | None = None  # the round attempt open, or closed and not yet counted
    round_number: int = 1  # the round open or about to open
    attempt: int = 1
    history: list[RoundRecord] = field(default_factory=list)
    # a completed round whose model is being evaluated: the history takes its record, in
    # round order, once its accuracy and loss are in (`round_evaluated`)
    evaluating: RoundRecord | None = None
    last_eval: EvalResult | None = None
    rng: random.Random = field(default_factory=random.Random)
    # what the strategy carries from round to round (FedAdam's moments); kept in the store
    strategy_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.phase not in FINAL_RUN_STATES

    @property
    def rounds_completed(self) -> int:
        """Completed rounds, the one whose evaluation is still running included."""
        done = sum(1 for r in self.history if r.outcome is RoundOutcome.COMPLETED)
        return done + (self.evaluating is not None)

    def open_round(self) -> Round | None:
        round_ = self.round
        return round_ if round_ is not None and not round_.closed else None

    def round_in_progress(self) -> Round | None:
        """The round attempt open now, or closed and not yet counted (its aggregate being
        made, the last round's evaluation awaited): what status shows as the open round,
        so a round never looks over before it is among the completed ones."""
        return self.round

    # ---- the phase ------------------------------------------------------------------------

    def begin(self) -> None:
        if self.phase is RunState.IDLE:
            self._enter(RunState.WAITING)

    def pause(self) -> None:
        """No new round opens until `resume`; the open round runs to its end."""
        self.require_active("pause")
        self._enter(RunState.PAUSED)

    def resume(self) -> None:
        if self.phase is not RunState.PAUSED:
            raise RunNotActive(f"run {self.run_id} is {self.phase.value}, not paused")
        self._enter(RunState.RUNNING if self.open_round() else RunState.WAITING)

    def stop(self) -> None:
        self.require_active("stop")
        self._enter(RunState.STOPPED)

    def finish(self) -> None:
        self._enter(RunState.FINISHED)

    def round_opened(self, round_: Round) -> None:
        self.round = round_
        self._enter(RunState.RUNNING)

    def round_closed(self, record: RoundRecord, *, evaluating: bool = False) -> None:
        """A round attempt ended as ``record`` says; completed rounds move the run on. An
        ``evaluating`` record joins the history with its evaluation (`round_evaluated`)."""
        self.round = None  # counted now: no longer in progress
        if evaluating:  # one at a time: the scheduler settles one before closing the next
            self.evaluating = record
        else:
            self.history.append(record)
        if record.outcome is RoundOutcome.COMPLETED:
            self.round_number, self.attempt = self.round_number + 1, 1
        elif record.outcome is RoundOutcome.RETRIED:
            self.attempt += 1
        if self.phase is RunState.RUNNING:
            self.phase = RunState.WAITING  # recorded with the round's commit
        self.changes.notify()

    def round_evaluated(self, record: RoundRecord, result: EvalResult | None) -> None:
        """``record`` with its evaluation (``result``; None if it failed) joins the history,
        or takes its own place there (a round restored before its evaluation was kept)."""
        key = (record.round, record.attempt)
        if self.evaluating is not None and (self.evaluating.round, self.evaluating.attempt) == key:
            self.evaluating = None
            self.history.append(record)
        else:
            at = [i for i, r in enumerate(self.history) if (r.round, r.attempt) == key]
            self.history[at[-1]] = record
        if result is not None:
            self.last_eval = result
        self.changes.notify()

    def unevaluated(self) -> RoundRecord | None:
        """The restored history's last completed round if its evaluation was never kept
        (the process died between its commit and its evaluation: only the last can be)."""
        completed = [r for r in self.history if r.outcome is RoundOutcome.COMPLETED]
        last = completed[-1] if completed else None
        return last if last is not None and math.isnan(last.accuracy) else None

    def require_active(self, action: str) -> None:
        if not self.active:
            raise RunNotActive(f"cannot {action} run {self.run_id}: it has {self.phase.value}")

    def _enter(self, phase: RunState) -> None:
        self.phase = phase
        self.recorder.run_state(phase)
        self.changes.notify()

    # ---- config ---------------------------------------------------------------------------

    def change_config(self, changes: Mapping[str, Any]) -> RunConfig:
        """Validate ``changes`` now; they take effect when the next round opens."""
        self.require_active("change the config of")
        self.pending_config = (self.pending_config or self.config).with_changes(changes)
        self.recorder.config_change(ConfigChange(self.round_number, dict(changes), time.time()))
        self.changes.notify()
        return self.pending_config

    def apply_pending_config(self) -> None:
        if self.pending_config is not None:
            self.config, self.pending_config = self.pending_config, None

    # ---- clients --------------------------------------------------------------------------

    def drop_client(self, record: ClientRecord, reason: str, *, failed: bool = False) -> None:
        """``record`` leaves the run (or fails); the open round stops waiting for it."""
        if failed:
            record.fail(reason)
        else:
            record.leave(reason)
        round_ = self.open_round()
        if round_ is not None:
            round_.drop(record.client_id)
        self.changes.notify()

    # ---- what the store keeps -------------------------------------------------------------

    def restore(self, stored: StoredRun) -> RoundRecord | None:
        """Take back a stored run's state; returns the record of the round attempt the last
        process died in, if it died with one open (added to the history as abandoned)."""
        snap = stored.snapshot
        self.config, self.pending_config = snap.config, snap.pending_config
        self.round_number, self.attempt = snap.round_number, snap.attempt
        self.history = list(stored.history)
        self.rng = rng_from_state(snap.rng_state)
        self.strategy_state = dict(stored.strategy_state)
        if not math.isnan(snap.accuracy):
            self.last_eval = EvalResult(loss=snap.loss, accuracy=snap.accuracy, num_examples=0)
        self.phase = RunState.PAUSED if snap.state is RunState.PAUSED else RunState.IDLE
        if snap.state is not RunState.RUNNING:
            return None
        # Run again as a new attempt, so that an update for the old one is refused as late.
        cut = _abandoned(snap.round_number, snap.attempt, snap.model_version)
        self.round_closed(cut)
        self.attempt += 1
        return cut

    def snapshot(
        self,
        model_version: int,
        by_transport: Mapping[str, Traffic],
        by_codec: Mapping[str, Traffic],
    ) -> RunSnapshot:
        last = self.last_eval
        return RunSnapshot(
            run_id=self.run_id,
            state=self.phase,
            round_number=self.round_number,
            attempt=self.attempt,
            model_version=model_version,
            config=self.config,
            pending_config=self.pending_config,
            rng_state=json.dumps(self.rng.getstate()),
            bytes_by_transport=dict(by_transport),
            bytes_by_codec=dict(by_codec),
            accuracy=last.accuracy if last else math.nan,
            loss=last.loss if last else math.nan,
        )


def rng_from_state(state: str) -> random.Random:
    """The selection RNG as a snapshot left it."""
    version, internal, gauss = json.loads(state)
    rng = random.Random()
    rng.setstate((version, tuple(internal), gauss))
    return rng


def _abandoned(number: int, attempt: int, model_version: int) -> RoundRecord:
    return RoundRecord(
        round=number,
        attempt=attempt,
        outcome=RoundOutcome.ABANDONED,
        participants=(),
        selected=(),
        num_examples=0,
        model_version=model_version,
        accuracy=math.nan,
        loss=math.nan,
        bytes_up=0,
        bytes_down=0,
        duration_s=0.0,
        reason="the server stopped while the round was open",
    )
