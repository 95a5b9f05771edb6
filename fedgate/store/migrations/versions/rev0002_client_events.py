"""Client events: every change of a client's state with its time (status and audits read
them after a restart); and an index for a user's sessions.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "client_events",
        sa.Column("id", BigInt, nullable=False),
        sa.Column("run_pk", BigInt, nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.id"], name=op.f("fk_client_events_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_events")),
    )
    op.create_index(op.f("ix_client_events_run_pk"), "client_events", ["run_pk"])
    op.create_index(op.f("ix_sessions_name"), "sessions", ["name"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sessions_name"), table_name="sessions")
    op.drop_index(op.f("ix_client_events_run_pk"), table_name="client_events")
    op.drop_table("client_events")
