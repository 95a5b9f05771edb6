"""The run store: the core's ports (`RunStore`, `KeyStore`, `UserStore`, `SessionStore`) in
SQL, on an SQLite file by default or on PostgreSQL (``postgresql+psycopg://...``).

    store = open_store("sqlite:///runs/fedgate.db")   # upgrades the schema to the head
    federation = build_federation(..., store=store.runs, keys=store.keys, ...)
    ...
    store.close()

Schema changes are Alembic revisions shipped in `fedgate/store/migrations` (`upgrade`,
`fedgate db upgrade`); `fedgate serve` upgrades on start, as `open_store` does.
"""

from __future__ import annotations

from sqlalchemy import URL

from fedgate.errors import StoreError
from fedgate.store.access import SqlKeyStore, SqlSessionStore, SqlUserStore
from fedgate.store.database import (
    DEFAULT_DB_URL,
    Database,
    head_revision,
    printable,
    resolve_url,
    sqlite_path,
)
from fedgate.store.runs import SqlRunStore

__all__ = [
    "DEFAULT_DB_URL",
    "SqlKeyStore",
    "SqlRunStore",
    "SqlSessionStore",
    "SqlStore",
    "SqlUserStore",
    "head_revision",
    "open_store",
    "printable",
    "schema_revision",
    "upgrade",
]


class SqlStore:
    """Every store on one database: `runs`, `keys`, `users`, `sessions`. Thread-safe; owns
    the engine (`close` it, or use it as a context manager)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.url = printable(database.url)  # without its password: fit to print
        self.runs = SqlRunStore(database)
        self.keys = SqlKeyStore(database)
        self.users = SqlUserStore(database)
        self.sessions = SqlSessionStore(database)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_store(url: str | URL = DEFAULT_DB_URL, *, migrate: bool = True) -> SqlStore:
    """The store at ``url``, its schema upgraded to the head revision first (a new SQLite
    file and its directory are created). With ``migrate=False`` (readers such as
    `fedgate runs`) nothing is created or changed: a missing database or an older schema
    is a `StoreError` that says what to run."""
    if not migrate:
        path = sqlite_path(resolve_url(url, create_dir=False))
        if path is not None and not path.is_file():
            raise StoreError(
                f"no database at {path}: `fedgate serve --db {printable(url)}` or "
                "`fedgate db upgrade` creates it"
            )
    database = Database(url)
    try:
        if migrate:
            database.migrate()
        else:
            _require_head(database)
    except BaseException:
        database.close()
        raise
    return SqlStore(database)


def upgrade(url: str | URL = DEFAULT_DB_URL, revision: str = "head") -> str | None:
    """Migrate the schema at ``url`` to ``revision`` (default: the newest); returns the
    revision it is at now."""
    database = Database(url)
    try:
        database.migrate(revision)
        return database.revision()
    finally:
        database.close()


def schema_revision(url: str | URL = DEFAULT_DB_URL) -> str | None:
    """The revision of the schema at ``url`` (None: no schema yet)."""
    database = Database(url)
    try:
        return database.revision()
    finally:
        database.close()


def _require_head(database: Database) -> None:
    current, head = database.revision(), head_revision()
    if current != head:
        raise StoreError(
            f"the database {printable(database.url)} has schema revision {current or 'none'}; "
            f"this fedgate reads {head}: run `fedgate db upgrade --db URL` first"
        )
