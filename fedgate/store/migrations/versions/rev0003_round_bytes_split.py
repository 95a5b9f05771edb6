"""Each round's payload bytes split by codec and by transport (the dashboard's per-round
charts). Rows written before stay NULL and read back as no split.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as table:  # batch: SQLite cannot alter in place
        table.add_column(sa.Column("bytes_by_codec", sa.Text(), nullable=True))
        table.add_column(sa.Column("bytes_by_transport", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rounds") as table:
        table.drop_column("bytes_by_transport")
        table.drop_column("bytes_by_codec")
