"""Backends for the store's tests: the in-memory reference, an SQLite file, a PostgreSQL
database of the test's own (skipped, saying why, when no server answers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.ports import RunStore
from fedgate.store import SqlStore, open_store
from tests.pg import fresh_postgres_database

SQL_BACKENDS = ["sqlite", "postgresql"]
BACKENDS = ["memory", *SQL_BACKENDS]


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL, on each SQL backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs' / 'fedgate.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sql_store(sql_url: str) -> Iterator[SqlStore]:
    with open_store(sql_url) as store:
        yield store


@pytest.fixture(params=BACKENDS)
def run_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    """A `RunStore` on each backend, the in-memory reference first."""
    if request.param == "memory":
        yield InMemoryRunStore()
    elif request.param == "sqlite":
        with open_store(f"sqlite:///{tmp_path / 'fedgate.db'}") as store:
            yield store.runs
    else:
        with fresh_postgres_database() as url, open_store(url) as store:
            yield store.runs
