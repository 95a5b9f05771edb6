"""A real PostgreSQL for tests: a fresh database per test, or a skip that says why.

The server is the one `make postgres` (tools/postgres.sh) starts, or any other named by
``FEDGATE_TEST_POSTGRES_URL``: a SQLAlchemy URL whose role may CREATE DATABASE. Each test
gets a database of its own (``fedgate_test_<random>``), dropped afterwards, so tests never
see each other's rows. Without a server they skip, saying why; with
``FEDGATE_REQUIRE_POSTGRES=1`` (CI) they fail instead, so that CI cannot pass untested.

    from tests.pg import fresh_postgres_database

    def test_something() -> None:
        with fresh_postgres_database() as url:   # skips when no server answers
            store = open_store(url)
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import time
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url

URL_ENV = "FEDGATE_TEST_POSTGRES_URL"
# Set (to 1) where a server must be there, as in CI: no server is then a failure, not a skip.
REQUIRE_ENV = "FEDGATE_REQUIRE_POSTGRES"
DEFAULT_URL = "postgresql+psycopg://fedgate:fedgate@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_S = 3


def server_url() -> str:
    """The SQLAlchemy URL of the server's maintenance database (from the environment)."""
    return os.environ.get(URL_ENV, DEFAULT_URL)


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq takes it (no ``+psycopg``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@functools.cache
def unreachable_reason() -> str:
    """Why no PostgreSQL answers ("" when one does); asked once per test process."""
    url = server_url()
    try:
        with psycopg.connect(_libpq(url), connect_timeout=CONNECT_TIMEOUT_S):
            return ""
    except psycopg.Error as error:
        where = make_url(url).render_as_string(hide_password=True)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return f"PostgreSQL not reachable at {where}: {first_line}; run `make postgres`"


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit; `pytest.skip` without a server."""
    reason = unreachable_reason()
    if reason and os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set)")
    if reason:
        pytest.skip(reason)
    name = f"fedgate_test_{secrets.token_hex(6)}"
    admin = _libpq(server_url())
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop(admin, name)


DROP_TRIES = 10


def _drop(admin: str, name: str) -> None:
    """Drop a test database. FORCE: a test that failed may have left a connection open.
    A backend of another role on it (seen once: the server's own worker, which the test
    role may not terminate) fails the drop for a moment; it is tried again, and a
    database that outlives every try is left with a warning, not an error of the test."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    for attempt in range(DROP_TRIES):
        try:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(drop)
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            time.sleep(0.2 * (attempt + 1))
    warnings.warn(f"test database {name} could not be dropped; drop it by hand", stacklevel=2)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database's URL (a fixture: import it into a test module or conftest)."""
    with fresh_postgres_database() as url:
        yield url
