"""The initial schema: runs and their snapshots, model versions, round attempts, clients,
config changes, enrolment keys, users and sessions.

Revision ID: 0001
Revises:
Create Date: 2025-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", BigInt, nullable=False)


def _run_pk() -> sa.Column[int]:
    return sa.Column("run_pk", BigInt, nullable=False)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_pk"], ["runs.id"], name=op.f(f"fk_{table}_run_pk_runs"), ondelete="CASCADE"
    )


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def upgrade() -> None:
    _runs()
    _run_children()
    _access()


def _runs() -> None:
    op.create_table(
        "runs",
        _id(),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("round_number", BigInt, nullable=False),
        sa.Column("attempt", BigInt, nullable=False),
        sa.Column("model_version", BigInt, nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("pending_config", sa.Text(), nullable=True),
        sa.Column("rng_state", sa.Text(), nullable=False),
        sa.Column("bytes_by_transport", sa.Text(), nullable=False),
        sa.Column("bytes_by_codec", sa.Text(), nullable=False),
        sa.Column("accuracy", sa.Double(), nullable=True),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("strategy_state", sa.LargeBinary(), nullable=True),
        sa.Column("strategy_state_sha256", sa.String(), nullable=True),
        _pk("runs"),
        sa.UniqueConstraint("run_id", name=op.f("uq_runs_run_id")),
    )


def _run_children() -> None:
    op.create_table(
        "model_versions",
        _id(),
        _run_pk(),
        sa.Column("version", BigInt, nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", BigInt, nullable=False),
        _run_fk("model_versions"),
        _pk("model_versions"),
        sa.UniqueConstraint("run_pk", "version", name=op.f("uq_model_versions_run_pk_version")),
    )
    op.create_table(
        "rounds",
        _id(),
        _run_pk(),
        sa.Column("round", BigInt, nullable=False),
        sa.Column("attempt", BigInt, nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.Column("selected", sa.Text(), nullable=False),
        sa.Column("excluded", sa.Text(), nullable=False),
        sa.Column("num_examples", BigInt, nullable=False),
        sa.Column("model_version", BigInt, nullable=False),
        sa.Column("accuracy", sa.Double(), nullable=True),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("train_loss", sa.Double(), nullable=True),
        sa.Column("bytes_up", BigInt, nullable=False),
        sa.Column("bytes_down", BigInt, nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _run_fk("rounds"),
        _pk("rounds"),
        sa.UniqueConstraint(
            "run_pk", "round", "attempt", name=op.f("uq_rounds_run_pk_round_attempt")
        ),
    )
    op.create_table(
        "clients",
        _id(),
        _run_pk(),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("codec", sa.String(), nullable=False),
        sa.Column("transport", sa.String(), nullable=False),
        sa.Column("num_examples", BigInt, nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("max_num_examples", BigInt, nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rounds_completed", BigInt, nullable=False),
        sa.Column("bytes_up", BigInt, nullable=False),
        sa.Column("bytes_down", BigInt, nullable=False),
        _run_fk("clients"),
        _pk("clients"),
        sa.UniqueConstraint("run_pk", "client_id", name=op.f("uq_clients_run_pk_client_id")),
    )
    op.create_table(
        "config_changes",
        _id(),
        _run_pk(),
        sa.Column("round_number", BigInt, nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        _run_fk("config_changes"),
        _pk("config_changes"),
    )
    op.create_index(op.f("ix_config_changes_run_pk"), "config_changes", ["run_pk"])


def _access() -> None:
    op.create_table(
        "enrolment_keys",
        _id(),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False),
        sa.Column("max_clients", BigInt, nullable=False),
        sa.Column("max_num_examples", BigInt, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        _pk("enrolment_keys"),
        sa.UniqueConstraint("key_id", name=op.f("uq_enrolment_keys_key_id")),
    )
    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        _pk("users"),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "sessions",
        _id(),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        _pk("sessions"),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
    )


def downgrade() -> None:
    for table in (
        "sessions",
        "users",
        "enrolment_keys",
        "config_changes",
        "clients",
        "rounds",
        "model_versions",
        "runs",
    ):
        op.drop_table(table)
