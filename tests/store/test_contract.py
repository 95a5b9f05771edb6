"""The store contract: the same calls give the same answers on the in-memory reference,
SQLite and PostgreSQL (runs, rounds, clients, events, model versions; keys, users,
sessions)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgate.core.accounts import InMemorySessionStore, InMemoryUserStore, Role, Session, User
from fedgate.core.enrolment import EnrolmentKey, InMemoryKeyStore
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.messages import ClientState, RoundOutcome, RunState
from fedgate.core.ports import (
    ConfigChange,
    ModelInfo,
    ModelVersion,
    RoundCommit,
    RoundEvaluation,
    RunMeta,
    RunStore,
    weights_hash,
)
from fedgate.errors import Conflict, NotFound
from fedgate.store import open_store
from tests.pg import fresh_postgres_database
from tests.store.conftest import BACKENDS
from tests.store.scenario import canonical, play, play_runs, record, snapshot, weights


@pytest.fixture(scope="module")
def reference() -> InMemoryRunStore:
    store = InMemoryRunStore()
    play_runs(store)
    return store


def test_runs_read_back_as_the_reference_holds_them(
    run_store: RunStore, reference: InMemoryRunStore
) -> None:
    play_runs(run_store)
    for run_id in ("run-0", "run-1", "run-2"):
        assert canonical(run_store.load_run(run_id)) == canonical(reference.load_run(run_id))
        assert run_store.client_events(run_id) == reference.client_events(run_id)
    unfinished = run_store.unfinished_run()
    assert unfinished is not None and unfinished.meta.run_id == "run-1"
    assert canonical(unfinished) == canonical(reference.unfinished_run())
    assert canonical(run_store.list_runs()) == canonical(reference.list_runs())
    assert [s.run_id for s in run_store.list_runs()] == ["run-2", "run-1", "run-0"]


def test_what_comes_back_is_typed_as_the_core_types_it(run_store: RunStore) -> None:
    play(run_store)
    run = run_store.load_run("run-1")
    assert [r.outcome for r in run.history] == [
        RoundOutcome.RETRIED,
        RoundOutcome.COMPLETED,
        RoundOutcome.COMPLETED,
    ]
    assert all(isinstance(r.outcome, RoundOutcome) for r in run.history)
    assert all(isinstance(c.state, ClientState) for c in run.clients)
    assert isinstance(run.snapshot.state, RunState) and run.snapshot.state is RunState.PAUSED
    assert run.model.version == 2 and run.model.sha256 == ModelVersion.of(2, weights(2)).sha256
    assert list(run.model.weights) == list(weights(2))  # the model's own order
    # a client saved again keeps its place; the newest record of it is the one kept
    assert [(c.client_id, c.reason) for c in run.clients] == [
        ("c1", ""),
        ("c2", ""),
        ("c3", ""),
    ]
    assert run.config_changes == (ConfigChange(1, {"learning_rate": 0.05}, 1_700_000_003.0),)


def test_an_empty_store_has_no_runs(run_store: RunStore) -> None:
    assert run_store.unfinished_run() is None
    assert run_store.list_runs() == []


def test_an_unknown_run_is_not_found(run_store: RunStore) -> None:
    play(run_store)
    commit = RoundCommit(snapshot("nope"), record(1, 1, RoundOutcome.RETRIED), None, ())
    calls: list[Any] = [
        lambda: run_store.load_run("nope"),
        lambda: run_store.client_events("nope"),
        lambda: run_store.set_run_state("nope", RunState.STOPPED),
        lambda: run_store.add_config_change("nope", ConfigChange(1, {}, 0.0)),
        lambda: run_store.save_clients("nope", (), ()),
        lambda: run_store.commit_round(commit),
        lambda: run_store.record_evaluation("nope", RoundEvaluation(1, 1, 0.5, 1.0)),
    ]
    for call in calls:
        with pytest.raises(NotFound, match="nope"):
            call()
    assert len(run_store.load_run("run-1").history) == 3


def test_an_evaluation_completes_its_round_and_a_failed_one_keeps_the_latest(
    run_store: RunStore,
) -> None:
    play(run_store)
    with pytest.raises(NotFound, match=r"no round 2\.2"):
        run_store.record_evaluation("run-1", RoundEvaluation(2, 2, 0.5, 1.0))
    run_store.record_evaluation(
        "run-1", RoundEvaluation(2, 1, math.nan, math.nan, "evaluation failed: x")
    )
    run = run_store.load_run("run-1")
    last = run.history[-1]
    assert (last.round, last.reason) == (2, "evaluation failed: x")
    assert math.isnan(last.accuracy) and math.isnan(last.loss)
    assert run.snapshot.accuracy == 0.75  # the latest evaluation that succeeded
    run_store.record_evaluation("run-1", RoundEvaluation(1, 2, 0.625, 0.5))
    run = run_store.load_run("run-1")
    assert (run.history[1].accuracy, run.history[1].loss) == (0.625, 0.5)
    assert (run.snapshot.accuracy, run.snapshot.loss) == (0.625, 0.5)
    assert math.isnan(run.history[0].accuracy)  # the retried round: none


def test_a_run_is_created_once(run_store: RunStore) -> None:
    meta = RunMeta("twice", "digits", "cnn", 1.0)
    run_store.create_run(meta, snapshot("twice"), ModelVersion.of(0, weights(0)))
    with pytest.raises(Conflict, match="twice"):
        run_store.create_run(meta, snapshot("twice"), ModelVersion.of(0, weights(1)))
    assert run_store.load_run("twice").model.sha256 == ModelVersion.of(0, weights(0)).sha256


# ---- model versions ------------------------------------------------------------------------


def test_every_published_model_version_is_listed_and_loads_bit_for_bit(
    run_store: RunStore, reference: InMemoryRunStore
) -> None:
    play_runs(run_store)
    sha = {seed: ModelVersion.of(seed, weights(seed)).sha256 for seed in (0, 1, 2, 5)}
    # the retried attempt published nothing; NaN where the round had no loss
    assert canonical(run_store.list_models("run-1")) == canonical(
        [
            ModelInfo(0, 0, math.nan, math.nan, sha[0]),
            ModelInfo(1, 1, 0.5, 1.25, sha[1]),
            ModelInfo(2, 2, 0.75, math.nan, sha[2]),
        ]
    )
    assert canonical(run_store.list_models("run-2")) == canonical(
        [ModelInfo(0, 0, math.nan, math.nan, sha[5])]
    )
    for run_id in ("run-0", "run-1", "run-2"):
        listed = run_store.list_models(run_id)
        assert canonical(listed) == canonical(reference.list_models(run_id))
        for info in listed:
            model = run_store.load_model(run_id, info.version)
            assert canonical(model) == canonical(reference.load_model(run_id, info.version))
            assert model.sha256 == info.sha256 == weights_hash(model.weights)
            assert list(model.weights) == list(weights(0))  # the model's own order


def test_an_unknown_model_version_is_not_found(run_store: RunStore) -> None:
    play(run_store)
    with pytest.raises(NotFound, match="no model version 3"):
        run_store.load_model("run-1", 3)
    with pytest.raises(NotFound, match="nope"):
        run_store.load_model("nope", 0)
    with pytest.raises(NotFound, match="nope"):
        run_store.list_models("nope")


# ---- keys, users, sessions ---------------------------------------------------------------


@dataclasses.dataclass
class Access:
    keys: Any
    users: Any
    sessions: Any


@pytest.fixture(params=BACKENDS)
def access(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Access]:
    if request.param == "memory":
        yield Access(InMemoryKeyStore(), InMemoryUserStore(), InMemorySessionStore())
    elif request.param == "sqlite":
        with open_store(f"sqlite:///{tmp_path / 'fedgate.db'}") as store:
            yield Access(store.keys, store.users, store.sessions)
    else:
        with fresh_postgres_database() as url, open_store(url) as store:
            yield Access(store.keys, store.users, store.sessions)


def key(key_id: str, **changes: Any) -> EnrolmentKey:
    base = EnrolmentKey(key_id, f"key {key_id}", "ab" * 32, 5, 1000, 10.0, expires_at=99.5)
    return dataclasses.replace(base, **changes)


def test_keys_as_the_in_memory_store_keeps_them(access: Access) -> None:
    access.keys.add(key("k2"))
    access.keys.add(key("k1", expires_at=None))
    access.keys.replace(key("k2", revoked_at=50.25))
    assert access.keys.all() == [key("k2", revoked_at=50.25), key("k1", expires_at=None)]
    assert access.keys.get("k1") == key("k1", expires_at=None)
    assert access.keys.get("k3") is None


def test_users_as_the_in_memory_store_keeps_them(access: Access) -> None:
    access.users.add(User("bo", Role.VIEWER, "$argon2id$one", 1.0))
    access.users.add(User("al", Role.ADMIN, "$argon2id$two", 2.0))
    access.users.replace(User("bo", Role.OPERATOR, "$argon2id$three", 1.0))
    assert access.users.all() == [
        User("bo", Role.OPERATOR, "$argon2id$three", 1.0),
        User("al", Role.ADMIN, "$argon2id$two", 2.0),
    ]
    assert isinstance(access.users.get("al").role, Role)
    assert access.users.remove("bo") is True
    assert access.users.remove("bo") is False
    assert access.users.get("bo") is None


def test_sessions_as_the_in_memory_store_keeps_them(access: Access) -> None:
    for token, name, expires in (("t1", "al", 10.0), ("t2", "al", 20.0), ("t3", "bo", 30.0)):
        access.sessions.add(Session(token, name, expires))
    assert access.sessions.get("t2") == Session("t2", "al", 20.0)
    assert access.sessions.for_user("al") == [Session("t1", "al", 10.0), Session("t2", "al", 20.0)]
    access.sessions.purge_expired(10.0)
    assert access.sessions.get("t1") is None
    access.sessions.remove("t2")
    access.sessions.remove("t2")  # again: harmless
    assert access.sessions.for_user("al") == []
    access.sessions.remove_user("bo")
    assert access.sessions.get("t3") is None
