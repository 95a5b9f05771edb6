"""The in-memory `RunStore`: the default for in-process runs and tests (nothing survives
the process). It is also the reference the SQL store's contract tests compare against."""

from __future__ import annotations

import dataclasses
import math
import threading

from fedgate.core.messages import FINAL_RUN_STATES, RoundOutcome, RoundRecord, RunState
from fedgate.core.ports import (
    ClientEvent,
    ConfigChange,
    ModelInfo,
    ModelVersion,
    RoundCommit,
    RoundEvaluation,
    RunMeta,
    RunSnapshot,
    RunSummary,
    StoredClient,
    StoredRun,
)
from fedgate.errors import Conflict, NotFound


@dataclasses.dataclass
class _Run:
    run: StoredRun
    events: list[ClientEvent] = dataclasses.field(default_factory=list)
    clients: dict[str, StoredClient] = dataclasses.field(default_factory=dict)
    models: dict[int, ModelVersion] = dataclasses.field(default_factory=dict)  # every version


class InMemoryRunStore:
    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()  # the writer thread and readers may overlap

    def create_run(self, meta: RunMeta, snapshot: RunSnapshot, model: ModelVersion) -> None:
        with self._lock:
            if meta.run_id in self._runs:
                raise Conflict(f"run {meta.run_id} already exists")
            self._runs[meta.run_id] = _Run(
                StoredRun(meta, snapshot, model, (), ()), models={model.version: model}
            )

    def commit_round(self, commit: RoundCommit) -> None:
        with self._lock:
            held = self._get(commit.snapshot.run_id)
            run = held.run
            held.clients.update({c.client_id: c for c in commit.clients})
            if commit.model is not None:
                held.models[commit.model.version] = commit.model
            held.run = dataclasses.replace(
                run,
                snapshot=commit.snapshot,
                model=commit.model or run.model,
                history=(*run.history, commit.record),
                strategy_state=dict(commit.strategy_state),
            )

    def record_evaluation(self, run_id: str, evaluation: RoundEvaluation) -> None:
        with self._lock:
            held = self._get(run_id)
            run, key = held.run, (evaluation.round, evaluation.attempt)
            found = [i for i, r in enumerate(run.history) if (r.round, r.attempt) == key]
            if not found:
                raise NotFound(f"run {run_id} has no round {key[0]}.{key[1]}")
            history = list(run.history)
            history[found[0]] = dataclasses.replace(
                history[found[0]],
                accuracy=evaluation.accuracy,
                loss=evaluation.loss,
                reason=evaluation.reason,
            )
            snapshot = run.snapshot
            if not math.isnan(evaluation.accuracy):
                snapshot = dataclasses.replace(
                    snapshot, accuracy=evaluation.accuracy, loss=evaluation.loss
                )
            held.run = dataclasses.replace(run, snapshot=snapshot, history=tuple(history))

    def save_clients(
        self,
        run_id: str,
        clients: tuple[StoredClient, ...],
        events: tuple[ClientEvent, ...] = (),
    ) -> None:
        with self._lock:
            held = self._get(run_id)
            held.clients.update({c.client_id: c for c in clients})
            held.events.extend(events)

    def add_config_change(self, run_id: str, change: ConfigChange) -> None:
        with self._lock:
            held = self._get(run_id)
            changes = (*held.run.config_changes, change)
            held.run = dataclasses.replace(held.run, config_changes=changes)

    def set_run_state(self, run_id: str, state: RunState) -> None:
        with self._lock:
            held = self._get(run_id)
            snapshot = dataclasses.replace(held.run.snapshot, state=state)
            held.run = dataclasses.replace(held.run, snapshot=snapshot)

    def unfinished_run(self) -> StoredRun | None:
        with self._lock:
            runs = [h for h in self._runs.values() if h.run.snapshot.state not in FINAL_RUN_STATES]
        return self._with_clients(runs[-1]) if runs else None

    def load_run(self, run_id: str) -> StoredRun:
        with self._lock:
            return self._with_clients(self._get(run_id))

    def list_runs(self) -> list[RunSummary]:
        with self._lock:
            runs = [h.run for h in self._runs.values()]
        return [_summary(run) for run in reversed(runs)]

    def client_events(self, run_id: str) -> list[ClientEvent]:
        with self._lock:
            return list(self._get(run_id).events)

    def list_models(self, run_id: str) -> list[ModelInfo]:
        with self._lock:
            held = self._get(run_id)
            models, history = sorted(held.models.values(), key=_version), held.run.history
        return [_model_info(model, history) for model in models]

    def load_model(self, run_id: str, version: int) -> ModelVersion:
        with self._lock:
            model = self._get(run_id).models.get(version)
        if model is None:
            raise NotFound(f"run {run_id} has no model version {version}")
        return model

    def close(self) -> None:
        pass

    def _get(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFound(f"no run {run_id!r} in the store") from None

    @staticmethod
    def _with_clients(held: _Run) -> StoredRun:
        return dataclasses.replace(held.run, clients=tuple(held.clients.values()))


def _summary(run: StoredRun) -> RunSummary:
    completed = [r for r in run.history if r.outcome == "completed"]
    return RunSummary(
        run_id=run.meta.run_id,
        state=run.snapshot.state,
        dataset=run.meta.dataset,
        model=run.meta.model,
        created_at=run.meta.created_at,
        rounds_completed=len(completed),
        rounds=run.snapshot.config.rounds,
        accuracy=completed[-1].accuracy if completed else float("nan"),
    )


def _version(model: ModelVersion) -> int:
    return model.version


def _model_info(model: ModelVersion, history: tuple[RoundRecord, ...]) -> ModelInfo:
    """``model`` described by the completed round that published it (none: version 0)."""
    published = [
        r
        for r in history
        if r.outcome == RoundOutcome.COMPLETED and r.model_version == model.version
    ]
    record = published[-1] if published else None
    return ModelInfo(
        version=model.version,
        round=record.round if record else 0,
        accuracy=record.accuracy if record else math.nan,
        loss=record.loss if record else math.nan,
        sha256=model.sha256,
    )
