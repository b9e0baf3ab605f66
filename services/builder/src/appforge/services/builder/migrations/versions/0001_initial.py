"""The builder's first schema: executions and their ordering state.

Revision ID: builder_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "builder_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builder_executions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(128), nullable=False),
        sa.Column("user_message_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("model", sa.String(32), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_stamp_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("heartbeat_us", sa.BigInteger, nullable=True),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("finished_us", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("builder_executions")
