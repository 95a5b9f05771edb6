"""`RunStore` in SQL: runs, round attempts, client records and events, model versions.

It behaves as `fedgate.core.memory_store.InMemoryRunStore` does (the contract tests run
the same calls on both); what it adds is that all of it outlives the process. Methods are
synchronous and thread-safe (a session per call): the federation's recorder calls them from
one writer thread, `fedgate runs` reads beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import torch
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from fedgate.core.messages import FINAL_RUN_STATES, ClientState, RoundOutcome, RunState
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
    TensorDict,
    weights_hash,
)
from fedgate.errors import Conflict, NotFound, StoreCorrupt
from fedgate.store.database import Database
from fedgate.store.records import client_from_row, client_values, record_from_row, record_values
from fedgate.store.schema import (
    ClientEventRow,
    ClientRow,
    ConfigChangeRow,
    ModelRow,
    RoundRow,
    RunRow,
)
from fedgate.store.values import (
    config_from_json,
    config_to_json,
    nan_to_null,
    null_to_nan,
    pack_tensors,
    to_json,
    traffic_from_json,
    traffic_to_json,
    unpack_tensors,
)

COMPLETED = RoundOutcome.COMPLETED.value
Row = TypeVar("Row", RoundRow, ClientRow, ConfigChangeRow)


class SqlRunStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    # ---- writes -------------------------------------------------------------------------

    def create_run(self, meta: RunMeta, snapshot: RunSnapshot, model: ModelVersion) -> None:
        weights = pack_tensors(model.weights)  # outside the write lock: it takes a moment
        with self.database.writing() as session:
            if session.scalar(select(RunRow.id).where(RunRow.run_id == meta.run_id)):
                raise Conflict(f"run {meta.run_id} already exists")
            run = RunRow(
                run_id=meta.run_id,
                dataset=meta.dataset,
                model=meta.model,
                created_at=meta.created_at,
                strategy_state=None,
                strategy_state_sha256=None,
                **_snapshot_values(snapshot),
            )
            session.add(run)
            session.flush()
            session.add(_model_row(run.id, model, weights))

    def commit_round(self, commit: RoundCommit) -> None:
        """Snapshot, client records, model and round record in one transaction, flushed in
        that order: if any part is refused (a round attempt written twice), none is kept."""
        # the model's sha256 is the core's (`ModelVersion.of`); reads check the bytes against it
        weights = pack_tensors(commit.model.weights) if commit.model is not None else b""
        state = _pack_state(commit.strategy_state)
        with self.database.writing() as session:
            run = _run_row(session, commit.snapshot.run_id)
            for column, value in _snapshot_values(commit.snapshot).items():
                setattr(run, column, value)
            run.strategy_state, run.strategy_state_sha256 = state
            session.flush()
            _save_clients(session, run.id, commit.clients)
            if commit.model is not None:
                session.add(_model_row(run.id, commit.model, weights))
                session.flush()
            session.add(RoundRow(run_pk=run.id, **record_values(commit.record)))

    def record_evaluation(self, run_id: str, evaluation: RoundEvaluation) -> None:
        """Two small UPDATEs in one transaction: the round's row, then the run's latest."""
        values = {
            "accuracy": nan_to_null(evaluation.accuracy),
            "loss": nan_to_null(evaluation.loss),
        }
        with self.database.writing() as session:
            run_pk = _run_pk(session, run_id)
            done = session.connection().execute(
                update(RoundRow)
                .where(
                    RoundRow.run_pk == run_pk,
                    RoundRow.round == evaluation.round,
                    RoundRow.attempt == evaluation.attempt,
                )
                .values(**values, reason=evaluation.reason)
            )
            if not done.rowcount:
                raise NotFound(f"run {run_id} has no round {evaluation.round}.{evaluation.attempt}")
            if values["accuracy"] is not None:
                session.connection().execute(
                    update(RunRow).where(RunRow.id == run_pk).values(**values)
                )

    def save_clients(
        self,
        run_id: str,
        clients: tuple[StoredClient, ...],
        events: tuple[ClientEvent, ...] = (),
    ) -> None:
        with self.database.writing() as session:
            run_pk = _run_pk(session, run_id)
            if clients:
                _save_clients(session, run_pk, clients)
            if events:
                rows = [
                    {
                        "run_pk": run_pk,
                        "client_id": e.client_id,
                        "state": ClientState(e.state).value,
                        "reason": e.reason,
                        "at": e.at,
                    }
                    for e in events
                ]
                session.execute(insert(ClientEventRow), rows)

    def add_config_change(self, run_id: str, change: ConfigChange) -> None:
        with self.database.writing() as session:
            session.add(
                ConfigChangeRow(
                    run_pk=_run_pk(session, run_id),
                    round_number=change.round_number,
                    changes=to_json(dict(change.changes)),
                    at=change.at,
                )
            )

    def set_run_state(self, run_id: str, state: RunState) -> None:
        with self.database.writing() as session:
            done = session.connection().execute(
                update(RunRow).where(RunRow.run_id == run_id).values(state=state.value)
            )
            if not done.rowcount:
                raise _no_run(run_id)

    # ---- reads --------------------------------------------------------------------------

    def unfinished_run(self) -> StoredRun | None:
        final = [state.value for state in FINAL_RUN_STATES]
        with self.database.reading() as session:
            row = session.scalar(
                select(RunRow).where(RunRow.state.not_in(final)).order_by(RunRow.id.desc())
            )
            return None if row is None else _stored_run(session, row)

    def load_run(self, run_id: str) -> StoredRun:
        with self.database.reading() as session:
            return _stored_run(session, _run_row(session, run_id))

    def list_runs(self) -> list[RunSummary]:
        with self.database.reading() as session:
            runs = session.scalars(select(RunRow).order_by(RunRow.id.desc())).all()
            counted = session.execute(
                select(RoundRow.run_pk, func.count())
                .where(RoundRow.outcome == COMPLETED)
                .group_by(RoundRow.run_pk)
            )
            completed: dict[int, int] = {run_pk: count for run_pk, count in counted}
            last = (
                select(func.max(RoundRow.id))
                .where(RoundRow.outcome == COMPLETED)
                .group_by(RoundRow.run_pk)
            )
            latest = session.execute(
                select(RoundRow.run_pk, RoundRow.accuracy).where(RoundRow.id.in_(last))
            )
            accuracy: dict[int, float | None] = {run_pk: value for run_pk, value in latest}
            return [
                RunSummary(
                    run_id=run.run_id,
                    state=RunState(run.state),
                    dataset=run.dataset,
                    model=run.model,
                    created_at=run.created_at,
                    rounds_completed=completed.get(run.id, 0),
                    rounds=config_from_json(run.config).rounds,
                    accuracy=null_to_nan(accuracy.get(run.id)),
                )
                for run in runs
            ]

    def client_events(self, run_id: str) -> list[ClientEvent]:
        with self.database.reading() as session:
            rows = session.scalars(
                select(ClientEventRow)
                .where(ClientEventRow.run_pk == _run_pk(session, run_id))
                .order_by(ClientEventRow.id)
            )
            return [ClientEvent(r.client_id, ClientState(r.state), r.reason, r.at) for r in rows]

    def list_models(self, run_id: str) -> list[ModelInfo]:
        with self.database.reading() as session:
            run_pk = _run_pk(session, run_id)
            # the completed round that published each version, if any (version 0: none)
            published = (
                select(RoundRow.model_version, RoundRow.round, RoundRow.accuracy, RoundRow.loss)
                .where(RoundRow.run_pk == run_pk, RoundRow.outcome == COMPLETED)
                .subquery()
            )
            rows = session.execute(
                select(ModelRow.version, ModelRow.sha256, published.c.round)
                .add_columns(published.c.accuracy, published.c.loss)
                .outerjoin(published, published.c.model_version == ModelRow.version)
                .where(ModelRow.run_pk == run_pk)
                .order_by(ModelRow.version)
            ).all()
        return [
            ModelInfo(version, round_ or 0, null_to_nan(accuracy), null_to_nan(loss), sha256)
            for version, sha256, round_, accuracy, loss in rows
        ]

    def load_model(self, run_id: str, version: int) -> ModelVersion:
        with self.database.reading() as session:
            row = session.scalar(
                select(ModelRow).where(
                    ModelRow.run_pk == _run_pk(session, run_id), ModelRow.version == version
                )
            )
            if row is None:
                raise NotFound(f"run {run_id} has no model version {version}")
            data, sha256 = row.weights, row.sha256
        weights = unpack_tensors(data, sha256, f"run {run_id} model version {version}")
        return ModelVersion(version, weights, sha256)

    def close(self) -> None:
        """Nothing to do: the `SqlStore` this belongs to owns the engine, and closes it."""


def _run_row(session: Session, run_id: str) -> RunRow:
    row = session.scalar(select(RunRow).where(RunRow.run_id == run_id))
    if row is None:
        raise _no_run(run_id)
    return row


def _run_pk(session: Session, run_id: str) -> int:
    pk = session.scalar(select(RunRow.id).where(RunRow.run_id == run_id))
    if pk is None:
        raise _no_run(run_id)
    return pk


def _no_run(run_id: str) -> NotFound:
    return NotFound(f"no run {run_id!r} in the store")


def _snapshot_values(snapshot: RunSnapshot) -> dict[str, Any]:
    pending = snapshot.pending_config
    return {
        "state": snapshot.state.value,
        "round_number": snapshot.round_number,
        "attempt": snapshot.attempt,
        "model_version": snapshot.model_version,
        "config": config_to_json(snapshot.config),
        "pending_config": None if pending is None else config_to_json(pending),
        "rng_state": snapshot.rng_state,
        "bytes_by_transport": traffic_to_json(snapshot.bytes_by_transport),
        "bytes_by_codec": traffic_to_json(snapshot.bytes_by_codec),
        "accuracy": nan_to_null(snapshot.accuracy),
        "loss": nan_to_null(snapshot.loss),
    }


def _snapshot(row: RunRow) -> RunSnapshot:
    return RunSnapshot(
        run_id=row.run_id,
        state=RunState(row.state),
        round_number=row.round_number,
        attempt=row.attempt,
        model_version=row.model_version,
        config=config_from_json(row.config),
        pending_config=None if row.pending_config is None else config_from_json(row.pending_config),
        rng_state=row.rng_state,
        bytes_by_transport=traffic_from_json(row.bytes_by_transport),
        bytes_by_codec=traffic_from_json(row.bytes_by_codec),
        accuracy=null_to_nan(row.accuracy),
        loss=null_to_nan(row.loss),
    )


def _model_row(run_pk: int, model: ModelVersion, weights: bytes) -> ModelRow:
    return ModelRow(
        run_pk=run_pk,
        version=model.version,
        sha256=model.sha256,
        weights=weights,
        size_bytes=len(weights),
    )


def _pack_state(state: Mapping[str, torch.Tensor]) -> tuple[bytes | None, str | None]:
    if not state:
        return None, None
    return pack_tensors(state), weights_hash(state)


def _save_clients(session: Session, run_pk: int, clients: Iterable[StoredClient]) -> None:
    """Insert or replace client records; a replaced one keeps its place in the order."""
    clients = list(clients)
    ids = {c.client_id for c in clients}
    rows = {
        row.client_id: row
        for row in session.scalars(
            select(ClientRow).where(ClientRow.run_pk == run_pk, ClientRow.client_id.in_(ids))
        )
    }
    for client in clients:
        row = rows.get(client.client_id)
        if row is None:
            row = rows[client.client_id] = ClientRow(run_pk=run_pk)
            session.add(row)
        for column, value in client_values(client).items():
            setattr(row, column, value)
    session.flush()


def _stored_run(session: Session, row: RunRow) -> StoredRun:
    what = f"run {row.run_id}"
    model = session.scalar(
        select(ModelRow).where(ModelRow.run_pk == row.id).order_by(ModelRow.version.desc())
    )
    if model is None:
        raise StoreCorrupt(f"{what} has no model version")
    weights = unpack_tensors(model.weights, model.sha256, f"{what} model version {model.version}")
    state: TensorDict = {}
    if row.strategy_state is not None:
        state = unpack_tensors(
            row.strategy_state, row.strategy_state_sha256 or "", f"{what} strategy state"
        )
    return StoredRun(
        meta=RunMeta(row.run_id, row.dataset, row.model, row.created_at),
        snapshot=_snapshot(row),
        model=ModelVersion(model.version, weights, model.sha256),
        history=tuple(record_from_row(r) for r in _children(session, RoundRow, row.id)),
        clients=tuple(client_from_row(c) for c in _children(session, ClientRow, row.id)),
        config_changes=tuple(
            ConfigChange(c.round_number, _changes(c.changes), c.at)
            for c in _children(session, ConfigChangeRow, row.id)
        ),
        strategy_state=state,
    )


def _children(session: Session, table: type[Row], run_pk: int) -> list[Row]:
    """A run's rows of ``table``, in the order they were written."""
    return list(session.scalars(select(table).where(table.run_pk == run_pk).order_by(table.id)))


def _changes(text: str) -> dict[str, Any]:
    changes = json.loads(text)
    if not isinstance(changes, dict):
        raise StoreCorrupt(f"a config change is not a JSON object: {text[:80]!r}")
    return changes
