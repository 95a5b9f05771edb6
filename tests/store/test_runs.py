"""What the SQL run store adds to the contract: a round's commit is one transaction, stored
tensors are checked on read, old rows still load, and many threads may call it at once."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import torch
from safetensors.torch import save as save_safetensors
from sqlalchemy import event, func, select, update

from fedgate.core.messages import ClientState, RoundOutcome, RunState
from fedgate.core.ports import ClientEvent, ModelVersion, RoundCommit, RunMeta
from fedgate.errors import Conflict, StoreCorrupt
from fedgate.store import SqlStore, open_store
from fedgate.store.schema import ClientRow, ModelRow, RunRow
from tests.store.scenario import canonical, client, play, record, snapshot, weights


def test_a_round_is_written_whole_or_not_at_all(sql_store: SqlStore) -> None:
    play(sql_store.runs)
    before = canonical(sql_store.runs.load_run("run-1"))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(maxsplit=1)[0] + " " + _table_of(statement))

    failing = RoundCommit(
        snapshot=snapshot("run-1", state=RunState.FINISHED, round_number=9, model_version=3),
        record=record(2, 1, RoundOutcome.COMPLETED),  # round 2 attempt 1 is written already
        model=ModelVersion.of(3, weights(3)),
        clients=(client(1, state=ClientState.LEFT), client(7)),
        strategy_state={"m": torch.full((3,), 9.0)},
    )
    event.listen(sql_store.database.engine, "before_cursor_execute", seen)
    try:
        with pytest.raises(Conflict, match="refused"):
            sql_store.runs.commit_round(failing)
    finally:
        event.remove(sql_store.database.engine, "before_cursor_execute", seen)
    # the snapshot, the clients and the model were sent before the round was refused...
    assert statements.index("UPDATE runs") < statements.index("INSERT clients")
    assert statements.index("INSERT clients") < statements.index("INSERT model_versions")
    assert statements[-1] == "INSERT rounds"
    # ...and none of it was kept
    assert canonical(sql_store.runs.load_run("run-1")) == before
    with sql_store.database.reading() as session:
        assert session.scalar(select(func.count()).select_from(ModelRow)) == 3
        assert session.scalar(select(func.count()).select_from(ClientRow)) == 3
    # the same commit with a round attempt not yet written goes through
    fixed = RoundCommit(
        failing.snapshot, record(3, 1, RoundOutcome.COMPLETED), failing.model, failing.clients
    )
    sql_store.runs.commit_round(fixed)
    run = sql_store.runs.load_run("run-1")
    assert (run.snapshot.round_number, run.model.version, len(run.clients)) == (9, 3, 4)


def _table_of(statement: str) -> str:
    words = statement.replace('"', "").split()
    keyword = {"UPDATE": 1, "INSERT": 2, "SELECT": -1, "DELETE": 2}.get(words[0].upper(), -1)
    return words[keyword] if keyword > 0 else ""


def _tamper(store: SqlStore, **values: Any) -> None:
    with store.database.writing() as session:
        session.execute(update(ModelRow).where(ModelRow.version == 2).values(**values))


def test_a_model_changed_in_the_database_is_refused(sql_store: SqlStore) -> None:
    play(sql_store.runs)
    with sql_store.database.reading() as session:
        stored = session.scalars(select(ModelRow.weights).where(ModelRow.version == 2)).one()
    flipped = bytearray(stored)
    flipped[-1] ^= 0x01  # one bit of the last tensor's data: still valid safetensors
    _tamper(sql_store, weights=bytes(flipped))
    with pytest.raises(StoreCorrupt, match=r"run run-1 model version 2 does not match"):
        sql_store.runs.load_run("run-1")
    with pytest.raises(StoreCorrupt):
        sql_store.runs.unfinished_run()
    with pytest.raises(StoreCorrupt, match=r"run run-1 model version 2 does not match"):
        sql_store.runs.load_model("run-1", 2)  # what inference and downloads read
    assert sql_store.runs.load_model("run-1", 1).version == 1  # the others are unharmed
    _tamper(sql_store, weights=b"\x00" * 7)
    with pytest.raises(StoreCorrupt, match="not readable safetensors"):
        sql_store.runs.load_run("run-1")
    _tamper(sql_store, weights=stored, sha256="0" * 64)
    with pytest.raises(StoreCorrupt, match="does not match its SHA-256"):
        sql_store.runs.load_run("run-1")
    _tamper(sql_store, sha256=ModelVersion.of(2, weights(2)).sha256)
    assert sql_store.runs.load_run("run-1").model.version == 2  # restored: served again


def test_a_strategy_state_changed_in_the_database_is_refused(sql_store: SqlStore) -> None:
    play(sql_store.runs)
    forged = save_safetensors({"m": torch.ones(3)})
    with sql_store.database.writing() as session:
        session.execute(update(RunRow).values(strategy_state=forged))
    with pytest.raises(StoreCorrupt, match="strategy state"):
        sql_store.runs.load_run("run-1")


def test_a_config_written_by_another_version_loads(sql_store: SqlStore) -> None:
    play(sql_store.runs)
    with sql_store.database.reading() as session:
        config = json.loads(session.scalars(select(RunRow.config)).one())
    del config["clip_norm"]  # a field this row predates: its default
    config["retired_option"] = 3  # a field since removed: ignored
    with sql_store.database.writing() as session:
        session.execute(update(RunRow).values(config=json.dumps(config)))
    loaded = sql_store.runs.load_run("run-1").snapshot.config
    assert (loaded.clip_norm, loaded.rounds, loaded.seed) == (0.0, 5, 7)


def test_threads_may_write_and_read_at_once(sql_store: SqlStore) -> None:
    runs = sql_store.runs
    runs.create_run(RunMeta("busy", "digits", "cnn", 1.0), snapshot("busy"), ModelVersion.of(0, {}))
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            for step in range(15):
                state = ClientState.TRAINING if step % 2 else ClientState.READY
                runs.save_clients("busy", (client(number, state=state, bytes_up=step),))
                runs.save_clients("busy", (), (ClientEvent(f"c{number}", state, "", step),))
                runs.load_run("busy")
                sql_store.keys.all()
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    run = runs.load_run("busy")
    assert sorted((c.client_id, c.bytes_up) for c in run.clients) == [
        (f"c{n}", 14) for n in range(1, 5)
    ]
    assert len(runs.client_events("busy")) == 4 * 15


def test_a_store_reopened_holds_what_was_written(sql_url: str) -> None:
    with open_store(sql_url) as store:
        play(store.runs)
        before = canonical(store.runs.load_run("run-1"))
    with open_store(sql_url) as store:
        assert canonical(store.runs.load_run("run-1")) == before
