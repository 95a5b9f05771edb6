"""`fedgate runs list|show|export` and `fedgate db upgrade`, on a store a run was played on."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgate import cli_store
from fedgate.cli import main
from fedgate.store import DEFAULT_DB_URL, head_revision, open_store, schema_revision, upgrade
from fedgate.store.export import CSV_COLUMNS
from tests.pg import fresh_postgres_database
from tests.store.conftest import SQL_BACKENDS
from tests.store.scenario import play_runs


@pytest.fixture(scope="module", params=SQL_BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database three runs were played on, for the module's tests (they only read it)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'fedgate.db'}"
        else:
            url = stack.enter_context(fresh_postgres_database())
        with open_store(url) as store:
            play_runs(store.runs)
        yield url


def test_runs_list_shows_every_run_newest_first(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "list", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RUN", "STATE", "DATASET", "MODEL", "CREATED", "ROUNDS", "ACCURACY"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["run-2", "stopped"],
        ["run-1", "paused"],
        ["run-0", "finished"],
    ]
    assert "2/5" in lines[2] and "0.7500" in lines[2]


def test_runs_show_tells_the_story_of_a_run(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "show", "run-1", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "state     paused: 2/5 rounds completed, next round 3 (attempt 1)" in out
    assert "change    from round 1: learning_rate=0.05" in out
    assert "retried (1 of 2 updates)" in out
    assert "failed" not in out  # c1 rejoined: its latest record is shown
    assert "client-3" in out


def test_runs_export_json_holds_the_run_and_every_round_attempt(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export" / "run.json"
    assert main(["runs", "export", "run-1", "--format", "json", "--out", str(out), "--db", db]) == 0
    assert "3 round attempts written" in capsys.readouterr().err
    document = json.loads(out.read_text())
    assert document["run_id"] == "run-1" and document["state"] == "paused"
    assert document["config"]["learning_rate"] == 0.1
    assert document["pending_config"] is None
    assert document["config_changes"] == [
        {"round": 1, "changes": {"learning_rate": 0.05}, "at": 1_700_000_003.0}
    ]
    history = document["history"]
    assert [(r["round"], r["attempt"], r["outcome"]) for r in history] == [
        (1, 1, "retried"),
        (1, 2, "completed"),
        (2, 1, "completed"),
    ]
    assert history[0]["accuracy"] is None and history[1]["train_loss"] is None  # NaN, inf
    assert [c["client_id"] for c in document["clients"]] == ["c1", "c2", "c3"]
    assert all("token_hash" not in c for c in document["clients"])


def test_runs_export_csv_is_one_row_per_round_attempt(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "export", "run-1", "--format", "csv", "--db", db]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["round"], r["attempt"], r["outcome"], r["accuracy"]) for r in rows] == [
        ("1", "1", "retried", ""),
        ("1", "2", "completed", "0.5"),
        ("2", "1", "completed", "0.75"),
    ]
    assert rows[2]["participants"] == "c1 c2 c3" and rows[2]["excluded"] == "c9"


def test_a_run_is_named_by_a_prefix_of_its_id_if_only_one_matches(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "export", "run-", "--db", db]) == 2
    assert "starts run-2, run-1, run-0" in capsys.readouterr().err
    assert main(["runs", "export", "nothing", "--db", db]) == 2
    assert "no single run 'nothing'" in capsys.readouterr().err


def test_db_upgrade_creates_and_then_has_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'fedgate.db'}"
    assert main(["runs", "list", "--db", url]) == 2
    assert "no database at" in capsys.readouterr().err
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"upgraded from revision none to {head_revision()}" in capsys.readouterr().err
    assert main(["db", "upgrade", "--db", url]) == 0
    assert "already" in capsys.readouterr().err
    assert schema_revision(url) == head_revision()
    assert main(["runs", "list", "--db", url]) == 0
    assert "no runs in" in capsys.readouterr().err


def test_runs_refuses_an_old_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fedgate.db'}"
    upgrade(url, "0001")
    assert main(["runs", "list", "--db", url]) == 2
    assert "run `fedgate db upgrade --db URL` first" in capsys.readouterr().err


def test_the_command_line_default_is_the_store_default() -> None:
    assert cli_store.DEFAULT_DB_URL == DEFAULT_DB_URL
