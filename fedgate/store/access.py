"""`KeyStore`, `UserStore` and `SessionStore` in SQL: enrolment keys, operators' accounts and
their login sessions survive a restart. Secrets arrive hashed (key secrets and session tokens
as SHA-256, passwords as argon2) and are stored as they arrive; nothing here sees a secret.

They behave as the in-memory stores beside their ports do: `add` of an existing name
replaces it, and `all` returns rows in the order they were first added.
"""

from __future__ import annotations

from sqlalchemy import Delete, delete, select
from sqlalchemy.orm import Session as OrmSession

from fedgate.core.accounts import Role, Session, User
from fedgate.core.enrolment import EnrolmentKey
from fedgate.store.database import Database
from fedgate.store.schema import KeyRow, SessionRow, UserRow


class SqlKeyStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, key: EnrolmentKey) -> None:
        self.replace(key)

    def get(self, key_id: str) -> EnrolmentKey | None:
        with self.database.reading() as session:
            row = session.scalar(select(KeyRow).where(KeyRow.key_id == key_id))
            return None if row is None else _key(row)

    def replace(self, key: EnrolmentKey) -> None:
        with self.database.writing() as session:
            row = session.scalar(select(KeyRow).where(KeyRow.key_id == key.key_id))
            if row is None:
                row = KeyRow(key_id=key.key_id)
                session.add(row)
            row.name, row.secret_hash = key.name, key.secret_hash
            row.max_clients, row.max_num_examples = key.max_clients, key.max_num_examples
            row.created_at, row.expires_at = key.created_at, key.expires_at
            row.revoked_at = key.revoked_at

    def all(self) -> list[EnrolmentKey]:
        with self.database.reading() as session:
            return [_key(row) for row in session.scalars(select(KeyRow).order_by(KeyRow.id))]


class SqlUserStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def get(self, name: str) -> User | None:
        with self.database.reading() as session:
            row = session.scalar(select(UserRow).where(UserRow.name == name))
            return None if row is None else _user(row)

    def add(self, user: User) -> None:
        self.replace(user)

    def replace(self, user: User) -> None:
        with self.database.writing() as session:
            row = session.scalar(select(UserRow).where(UserRow.name == user.name))
            if row is None:
                row = UserRow(name=user.name)
                session.add(row)
            row.role, row.password_hash = user.role.value, user.password_hash
            row.created_at = user.created_at

    def remove(self, name: str) -> bool:
        with self.database.writing() as session:
            return _deleted(session, delete(UserRow).where(UserRow.name == name)) > 0

    def all(self) -> list[User]:
        with self.database.reading() as session:
            return [_user(row) for row in session.scalars(select(UserRow).order_by(UserRow.id))]


class SqlSessionStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, session: Session) -> None:
        with self.database.writing() as orm:
            row = orm.scalar(select(SessionRow).where(SessionRow.token_hash == session.token_hash))
            if row is None:
                row = SessionRow(token_hash=session.token_hash)
                orm.add(row)
            row.name, row.expires_at = session.name, session.expires_at

    def get(self, token_hash: str) -> Session | None:
        with self.database.reading() as orm:
            row = orm.scalar(select(SessionRow).where(SessionRow.token_hash == token_hash))
            return None if row is None else _session(row)

    def remove(self, token_hash: str) -> None:
        with self.database.writing() as orm:
            _deleted(orm, delete(SessionRow).where(SessionRow.token_hash == token_hash))

    def for_user(self, name: str) -> list[Session]:
        with self.database.reading() as orm:
            rows = orm.scalars(
                select(SessionRow).where(SessionRow.name == name).order_by(SessionRow.id)
            )
            return [_session(row) for row in rows]

    def remove_user(self, name: str) -> None:
        with self.database.writing() as orm:
            _deleted(orm, delete(SessionRow).where(SessionRow.name == name))

    def purge_expired(self, now: float) -> None:
        with self.database.writing() as orm:
            _deleted(orm, delete(SessionRow).where(SessionRow.expires_at <= now))


def _deleted(session: OrmSession, statement: Delete) -> int:
    """How many rows ``statement`` deleted (the session's connection reports a count)."""
    return session.connection().execute(statement).rowcount


def _key(row: KeyRow) -> EnrolmentKey:
    return EnrolmentKey(
        key_id=row.key_id,
        name=row.name,
        secret_hash=row.secret_hash,
        max_clients=row.max_clients,
        max_num_examples=row.max_num_examples,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _user(row: UserRow) -> User:
    return User(row.name, Role(row.role), row.password_hash, row.created_at)


def _session(row: SessionRow) -> Session:
    return Session(row.token_hash, row.name, row.expires_at)
