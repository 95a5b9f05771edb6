"""Alembic's entry point: migrate through the connection `fedgate.store.database` passes,
or, for the alembic command line, through ``sqlalchemy.url`` from its config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from fedgate.store.schema import Base

target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    # SQLite alters tables by copying them (batch mode); PostgreSQL alters in place
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url, or run `fedgate db upgrade --db URL`")
    engine = create_engine(url)
    try:
        with engine.begin() as own:
            run_migrations(own)
    finally:
        engine.dispose()


main()
