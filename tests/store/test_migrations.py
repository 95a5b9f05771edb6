"""Schema migrations: the revisions build exactly the tables the models declare, and a
database written at the first revision reads back through the store after an upgrade."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from safetensors.torch import save as save_safetensors
from sqlalchemy import MetaData, create_engine, insert, inspect

from fedgate.core.accounts import Role, Session, User
from fedgate.core.config import RunConfig
from fedgate.core.enrolment import EnrolmentKey
from fedgate.core.messages import ClientState, RoundOutcome, RoundRecord, RunState, Traffic
from fedgate.core.ports import (
    ClientEvent,
    ConfigChange,
    ModelVersion,
    RunMeta,
    RunSnapshot,
    StoredClient,
    StoredRun,
)
from fedgate.errors import StoreError
from fedgate.store import head_revision, open_store, schema_revision, upgrade
from fedgate.store.schema import Base
from tests.store.scenario import canonical, weights

FIRST = "0001"


def test_the_migrations_build_what_the_models_declare(sql_url: str) -> None:
    assert upgrade(sql_url) == head_revision() == schema_revision(sql_url)
    engine = create_engine(sql_url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
    assert upgrade(sql_url) == head_revision()  # again: nothing to do


def test_an_old_database_reads_after_the_upgrade(sql_url: str) -> None:
    assert upgrade(sql_url, FIRST) == FIRST
    engine = create_engine(sql_url)
    try:
        assert "client_events" not in inspect(engine).get_table_names()
        _write_first_revision_rows(engine)
    finally:
        engine.dispose()

    with open_store(sql_url) as store:  # upgrades to the head on open
        assert schema_revision(sql_url) == head_revision()
        assert canonical(store.runs.load_run("old-run")) == canonical(EXPECTED)
        assert canonical(store.runs.unfinished_run()) == canonical(EXPECTED)
        assert store.keys.get("k1") == KEY
        assert store.users.all() == [USER]
        assert store.sessions.for_user("al") == [SESSION]
        # what the second revision added works on the old run
        event = ClientEvent("c1", ClientState.READY, "resumed", 1_700_000_100.0)
        store.runs.save_clients("old-run", (), (event,))
        assert store.runs.client_events("old-run") == [event]


def test_readers_refuse_an_old_schema_and_say_what_to_run(sql_url: str) -> None:
    upgrade(sql_url, FIRST)
    with pytest.raises(StoreError, match=r"revision 0001.*fedgate db upgrade"):
        open_store(sql_url, migrate=False)
    upgrade(sql_url)
    with open_store(sql_url, migrate=False) as store:
        assert store.runs.list_runs() == []


# ---- a database as the first revision's fedgate wrote it ---------------------------------

# Its safetensors carry no name order (that came later): names come back sorted.
OLD_WEIGHTS = {name: tensor for name, tensor in sorted(weights(4).items())}
OLD_CONFIG = RunConfig(rounds=8, min_clients=3, learning_rate=0.2, seed=11)
KEY = EnrolmentKey("k1", "lab", "cd" * 32, 4, 500, 5.0, expires_at=None, revoked_at=7.5)
USER = User("al", Role.ADMIN, "$argon2id$v=19$m=65536,t=3,p=4$old", 3.0)
SESSION = Session("ef" * 32, "al", 9_999_999_999.0)
CLIENT = StoredClient(
    "c1", "site-a", "12" * 32, "raw", "grpc", 120, "k1", 500, ClientState.TRAINING, "", 2, 5, 6
)
RECORDS = (
    RoundRecord(1, 1, RoundOutcome.COMPLETED, ("c1",), ("c1",), 120, 1, 0.5, 0.9, 5, 6, 1.5),
    RoundRecord(
        2,
        1,
        RoundOutcome.RETRIED,
        (),
        ("c1",),
        0,
        1,
        float("nan"),
        float("nan"),
        0,
        3,
        60.0,
        reason="0 of 1 updates",
    ),
)
EXPECTED = StoredRun(
    meta=RunMeta("old-run", "digits", "cnn", 1_700_000_000.0),
    snapshot=RunSnapshot(
        run_id="old-run",
        state=RunState.RUNNING,
        round_number=2,
        attempt=2,
        model_version=1,
        config=OLD_CONFIG,
        pending_config=None,
        rng_state="[3, [9], null]",
        bytes_by_transport={"grpc": Traffic(5, 9)},
        bytes_by_codec={"raw": Traffic(5, 9)},
        accuracy=0.5,
        loss=0.9,
    ),
    model=ModelVersion.of(1, OLD_WEIGHTS),
    history=RECORDS,
    clients=(CLIENT,),
    config_changes=(ConfigChange(2, {"min_clients": 3}, 1_700_000_050.0),),
    strategy_state={},
)


def _write_first_revision_rows(engine: Any) -> None:
    """Rows as revision 0001 holds them, inserted into its reflected tables: no store code."""
    tables = MetaData()
    tables.reflect(engine)
    config = {**OLD_CONFIG.__dict__, "option_of_the_past": True}
    del config["clip_norm"]
    with engine.begin() as connection:
        run = connection.execute(
            insert(tables.tables["runs"]).values(
                run_id="old-run",
                dataset="digits",
                model="cnn",
                created_at=1_700_000_000.0,
                state="running",
                round_number=2,
                attempt=2,
                model_version=1,
                config=json.dumps(config),
                pending_config=None,
                rng_state="[3, [9], null]",
                bytes_by_transport='{"grpc": [5, 9]}',
                bytes_by_codec='{"raw": [5, 9]}',
                accuracy=0.5,
                loss=0.9,
                strategy_state=None,
                strategy_state_sha256=None,
            )
        ).inserted_primary_key[0]
        for version, tensors in ((0, weights(0)), (1, OLD_WEIGHTS)):
            data = save_safetensors({k: v.contiguous() for k, v in tensors.items()})
            connection.execute(
                insert(tables.tables["model_versions"]).values(
                    run_pk=run,
                    version=version,
                    sha256=ModelVersion.of(version, tensors).sha256,
                    weights=data,
                    size_bytes=len(data),
                )
            )
        for r in RECORDS:
            nan = r.loss != r.loss
            connection.execute(
                insert(tables.tables["rounds"]).values(
                    run_pk=run,
                    round=r.round,
                    attempt=r.attempt,
                    outcome=r.outcome.value,
                    participants=json.dumps(r.participants),
                    selected=json.dumps(r.selected),
                    excluded="[]",
                    num_examples=r.num_examples,
                    model_version=r.model_version,
                    accuracy=None if nan else r.accuracy,
                    loss=None if nan else r.loss,
                    train_loss=None,
                    bytes_up=r.bytes_up,
                    bytes_down=r.bytes_down,
                    duration_s=r.duration_s,
                    reason=r.reason,
                )
            )
        client = {**CLIENT.__dict__, "state": CLIENT.state.value}
        connection.execute(insert(tables.tables["clients"]).values(run_pk=run, **client))
        connection.execute(
            insert(tables.tables["config_changes"]).values(
                run_pk=run, round_number=2, changes='{"min_clients": 3}', at=1_700_000_050.0
            )
        )
        connection.execute(insert(tables.tables["enrolment_keys"]).values(**KEY.__dict__))
        connection.execute(
            insert(tables.tables["users"]).values(**{**USER.__dict__, "role": USER.role.value})
        )
        connection.execute(insert(tables.tables["sessions"]).values(**SESSION.__dict__))
