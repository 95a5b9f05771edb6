"""The store's tables, as SQLAlchemy 2 declarative models.

The migrations in `fedgate/store/migrations/versions` create exactly these tables (a test
compares the two); a change here needs a new revision there.

Conventions, the same on SQLite and PostgreSQL:
- every table has an autoincrement ``id``: rows come back in the order they were written,
  as the in-memory stores return them;
- JSON goes into text columns (config, participants, traffic), not a JSON type: a config
  change may hold a float PostgreSQL's JSON cannot (NaN), and text compares the same on both;
- a float that may be NaN (accuracy, loss) is a nullable column: NULL stands for NaN,
  which SQLite cannot store either;
- tensors are safetensors bytes beside their SHA-256, checked on read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Double,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so that a later migration can name the one it alters.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# 64-bit everywhere (byte counters outgrow 32 bits); SQLite's INTEGER already is, and only
# INTEGER PRIMARY KEY autoincrements there.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


def run_fk() -> ForeignKey:
    """A child row's run: deleting a run deletes its rows."""
    return ForeignKey("runs.id", ondelete="CASCADE")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        int: BigInt,
        float: Double(),
        str: String(),
        bytes: LargeBinary(),
    }


class RunRow(Base):
    """A run, and its snapshot: where it stands between rounds (replaced at every commit)."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(unique=True)
    dataset: Mapped[str]
    model: Mapped[str]
    created_at: Mapped[float]
    state: Mapped[str]
    round_number: Mapped[int]
    attempt: Mapped[int]
    model_version: Mapped[int]
    config: Mapped[str] = mapped_column(Text)  # RunConfig as JSON
    pending_config: Mapped[str | None] = mapped_column(Text)
    rng_state: Mapped[str] = mapped_column(Text)
    bytes_by_transport: Mapped[str] = mapped_column(Text)  # {"grpc": [up, down], ...}
    bytes_by_codec: Mapped[str] = mapped_column(Text)
    accuracy: Mapped[float | None]  # NULL: NaN
    loss: Mapped[float | None]
    strategy_state: Mapped[bytes | None]  # safetensors; NULL when the strategy keeps none
    strategy_state_sha256: Mapped[str | None]


class ModelRow(Base):
    """A published model version; resume reads only the newest."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("run_pk", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(run_fk())
    version: Mapped[int]
    sha256: Mapped[str]
    weights: Mapped[bytes]  # safetensors
    size_bytes: Mapped[int]


class RoundRow(Base):
    """One closed round attempt (a RoundRecord); (round, attempt) is never written twice."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_pk", "round", "attempt"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(run_fk())
    round: Mapped[int]
    attempt: Mapped[int]
    outcome: Mapped[str]  # RoundOutcome's value
    participants: Mapped[str] = mapped_column(Text)  # JSON lists of client ids
    selected: Mapped[str] = mapped_column(Text)
    excluded: Mapped[str] = mapped_column(Text)
    num_examples: Mapped[int]
    model_version: Mapped[int]
    accuracy: Mapped[float | None]
    loss: Mapped[float | None]
    train_loss: Mapped[float | None]
    bytes_up: Mapped[int]
    bytes_down: Mapped[int]
    duration_s: Mapped[float]
    reason: Mapped[str] = mapped_column(Text)
    # JSON {name: [up, down]}; NULL in rows written before revision 0003
    bytes_by_codec: Mapped[str | None] = mapped_column(Text)
    bytes_by_transport: Mapped[str | None] = mapped_column(Text)


class ClientRow(Base):
    """A client's registry record (its token only as a hash), replaced as it changes."""

    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("run_pk", "client_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(run_fk())
    client_id: Mapped[str]
    name: Mapped[str]
    token_hash: Mapped[str]
    codec: Mapped[str]
    transport: Mapped[str]
    num_examples: Mapped[int]
    key_id: Mapped[str]
    max_num_examples: Mapped[int]
    state: Mapped[str]
    reason: Mapped[str] = mapped_column(Text)
    rounds_completed: Mapped[int]
    bytes_up: Mapped[int]
    bytes_down: Mapped[int]


class ConfigChangeRow(Base):
    __tablename__ = "config_changes"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(run_fk(), index=True)
    round_number: Mapped[int]
    changes: Mapped[str] = mapped_column(Text)  # JSON object
    at: Mapped[float]


class ClientEventRow(Base):
    """Every change of a client's state (revision 0002)."""

    __tablename__ = "client_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(run_fk(), index=True)
    client_id: Mapped[str]
    state: Mapped[str]
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[float]


class KeyRow(Base):
    """An enrolment key: its secret only as a SHA-256."""

    __tablename__ = "enrolment_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str]
    secret_hash: Mapped[str]
    max_clients: Mapped[int]
    max_num_examples: Mapped[int]
    created_at: Mapped[float]
    expires_at: Mapped[float | None]
    revoked_at: Mapped[float | None]


class UserRow(Base):
    """An operator's account: the password only as its argon2 hash."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    role: Mapped[str]
    password_hash: Mapped[str]
    created_at: Mapped[float]


class SessionRow(Base):
    """A login session, by the SHA-256 of its token."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str] = mapped_column(index=True)  # a user's sessions (revision 0002)
    expires_at: Mapped[float]
