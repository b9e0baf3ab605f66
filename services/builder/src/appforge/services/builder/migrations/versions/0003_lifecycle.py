"""Execution lifecycle: the assistant message, the stamp of each tools item, the final
notice outbox, one execution per user message, and the sweeper's indexes.

Revision ID: builder_0003
Revises: builder_0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "builder_0003"
down_revision = "builder_0002"
branch_labels = None
depends_on = None

RUNNING = sa.text("status = 1")
UNDELIVERED = sa.text("notified_us IS NULL AND status <> 1")


def upgrade() -> None:
    with op.batch_alter_table("builder_executions") as batch:
        batch.add_column(sa.Column("message_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("notice_due_us", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("notified_us", sa.BigInteger, nullable=True))
        batch.create_unique_constraint(
            "uq_builder_executions_user_message", ["app_id", "user_message_id"]
        )
    with op.batch_alter_table("builder_tool_calls") as batch:
        batch.add_column(sa.Column("stamp_us", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index(
        "ix_builder_executions_heartbeat",
        "builder_executions",
        ["heartbeat_us"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )
    op.create_index(
        "ix_builder_executions_notice_due",
        "builder_executions",
        ["notice_due_us"],
        postgresql_where=UNDELIVERED,
        sqlite_where=UNDELIVERED,
    )


def downgrade() -> None:
    op.drop_index("ix_builder_executions_notice_due", "builder_executions")
    op.drop_index("ix_builder_executions_heartbeat", "builder_executions")
    with op.batch_alter_table("builder_tool_calls") as batch:
        batch.drop_column("stamp_us")
    with op.batch_alter_table("builder_executions") as batch:
        batch.drop_constraint("uq_builder_executions_user_message", type_="unique")
        batch.drop_column("notified_us")
        batch.drop_column("notice_due_us")
        batch.drop_column("message_id")
