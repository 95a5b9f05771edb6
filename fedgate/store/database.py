"""The database behind the store: URLs, engines, transactions and schema migrations.

SQLite (the default) gets, on every connection: WAL (readers such as `fedgate runs` never
block the server's writes), ``synchronous=NORMAL`` (a commit survives a crash of the
process; only a power cut may lose the last ones, never corrupt the file), foreign keys and
a busy timeout. There is one writer: write transactions take a lock in this process and
begin ``IMMEDIATE``, so that a transaction never fails half-way for want of the write lock.
PostgreSQL (``postgresql+psycopg://``) needs none of that.

The schema is Alembic's (`fedgate/store/migrations`), run from here, not from an ini file.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from fedgate.errors import ConfigError, Conflict, StoreError

DEFAULT_DB_URL = "sqlite:///runs/fedgate.db"
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
BACKENDS = ("sqlite", "postgresql")
BUSY_TIMEOUT_MS = 30_000
MIGRATION_LOCK = 0x66656467  # PostgreSQL advisory lock key ("fedg")
_WRITE = "fedgate_write"  # an execution option: this transaction will write


def resolve_url(url: str | URL, *, create_dir: bool = True) -> URL:
    """``url`` parsed; a relative SQLite path made absolute against the working directory,
    and its directory created (``create_dir``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"not a database URL: {url!r} (e.g. {DEFAULT_DB_URL} or "
            "postgresql+psycopg://user:password@host/dbname)"
        ) from None
    if parsed.get_backend_name() not in BACKENDS:
        raise ConfigError(
            f"the store runs on SQLite or PostgreSQL, not {parsed.get_backend_name()!r}"
        )
    path = sqlite_path(parsed)
    if path is None:
        return parsed
    path = path.expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if create_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    return parsed.set(database=str(path))


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL (None: not SQLite, or in memory)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def printable(url: str | URL) -> str:
    """A URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


class Database:
    """An engine and its transactions: `reading` for queries, `writing` for changes."""

    def __init__(self, url: str | URL) -> None:
        self.url = resolve_url(url)
        self.sqlite = self.url.get_backend_name() == "sqlite"
        self.engine = _engine(self.url)
        self._writer = self.engine.execution_options(**{_WRITE: True})
        # A read sees one state of the database throughout (a run's rows as of one commit):
        # SQLite's WAL gives every transaction a snapshot; PostgreSQL needs asking.
        self._reader = (
            self.engine
            if self.sqlite
            else self.engine.execution_options(isolation_level="REPEATABLE READ")
        )
        # SQLite has one writer; PostgreSQL's row locks need no help from here
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.sqlite else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        with translated(self.url), Session(self._reader) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def writing(self) -> Iterator[Session]:
        """One transaction: committed if the block returns, rolled back if it raises."""
        with (
            translated(self.url),
            self._write_lock,
            Session(self._writer) as session,
            session.begin(),
        ):
            yield session

    def migrate(self, revision: str = "head") -> None:
        with translated(self.url), self._write_lock, self._writer.begin() as connection:
            if not self.sqlite:  # servers starting at once on one database migrate in turn
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            command.upgrade(alembic_config(connection), revision)

    def revision(self) -> str | None:
        """The schema's revision (None: an empty database)."""
        with translated(self.url), self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def close(self) -> None:
        self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config for the migrations shipped in the package (no ini file); with a
    connection, `env.py` migrates through it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


@contextlib.contextmanager
def translated(url: URL) -> Iterator[None]:
    """Database errors as fedgate's own: a refused write is a `Conflict`, anything else
    the database says (unreachable, locked, no such table) a `StoreError`."""
    try:
        yield
    except IntegrityError as error:
        raise Conflict(f"the store refused the write: {error.orig}") from error
    except DBAPIError as error:
        raise StoreError(f"database {printable(url)}: {error.orig}") from error


def _engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    options: dict[str, Any] = {}
    if sqlite_path(url) is None:  # in memory: one connection, or each would see its own
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    engine = create_engine(url, **options)
    event.listen(engine, "connect", _sqlite_connected)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connected(dbapi_connection: Any, _record: object) -> None:
    # The driver's own transaction handling begins lazily and never for reads; fedgate
    # issues BEGIN itself (`_sqlite_begin`), so that a transaction is one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={BUSY_TIMEOUT_MS}",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    writes = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
