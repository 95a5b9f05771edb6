"""Alembic migrations of the store's schema (run by `fedgate.store.database`)."""
