"""The database under the store: where a URL points, SQLite's settings, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from fedgate.errors import ConfigError, StoreError
from fedgate.store import DEFAULT_DB_URL, open_store
from fedgate.store.database import BUSY_TIMEOUT_MS


def test_the_default_database_is_a_file_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_DB_URL == "sqlite:///runs/fedgate.db"
    with open_store() as store:
        assert store.url == f"sqlite:///{tmp_path / 'runs' / 'fedgate.db'}"
    assert (tmp_path / "runs" / "fedgate.db").is_file()


def test_every_sqlite_connection_is_set_up_for_one_writer_and_many_readers(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fedgate.db'}"
    with open_store(url) as store, store.database.engine.connect() as connection:
        pragmas = {
            name: connection.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    # synchronous 1 is NORMAL
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": BUSY_TIMEOUT_MS,
    }


def test_readers_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "fedgate.db"
    with pytest.raises(StoreError, match=r"no database at .*fedgate db upgrade"):
        open_store(f"sqlite:///{missing}", migrate=False)
    assert not missing.parent.exists()


def test_urls_that_are_not_a_store_are_refused() -> None:
    with pytest.raises(ConfigError, match="not a database URL"):
        open_store("runs/fedgate.db")
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL, not 'mysql'"):
        open_store("mysql://localhost/fedgate")


def test_an_unreachable_server_is_a_store_error_without_its_password() -> None:
    url = "postgresql+psycopg://fedgate:secret-pw@127.0.0.1:1/fedgate?connect_timeout=2"
    with pytest.raises(
        StoreError, match=r"database postgresql\+psycopg://fedgate:\*\*\*@"
    ) as error:
        open_store(url)
    assert "secret-pw" not in str(error.value)
