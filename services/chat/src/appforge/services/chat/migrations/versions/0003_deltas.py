"""Writes that cost what they change: `chat_messages.last_stamp_us`, and
`chat_upsert_assistant_v2` (sql/chat_upsert_assistant_v2.sql) beside the first version.

The stamp floor was `max(timestamp_us)` over the execution's items, a scan of them all; the
message row (locked by every write anyway) now keeps the latest stamp. No index is added on
purpose: a second index leading with `execution_id` ties with the primary key in the
planner's eyes on small or unanalysed tables, and it then looked items up through it, one
scan of the execution per item. `chat_upsert_assistant` (v1) stays, so replicas of the
previous release keep working during a rolling upgrade (v2 also takes the stamp of the
execution's last item into its floor, which covers items v1 wrote); a later migration
drops it.

Revision ID: chat_0003
Revises: chat_0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appforge.services.chat import sql

revision = "chat_0003"
down_revision = "chat_0002"
branch_labels = None
depends_on = None

FUNCTION = "chat_upsert_assistant_v2"
SIGNATURE = "(text, text, text, jsonb, smallint, jsonb, bigint)"


def upgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(
            sa.Column("last_stamp_us", sa.BigInteger, nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE chat_messages SET last_stamp_us = coalesce((SELECT max(f.timestamp_us)"
        " FROM chat_flow_items f WHERE f.execution_id = chat_messages.execution_id), 0)"
        " WHERE execution_id IS NOT NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sql.load(FUNCTION))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}{SIGNATURE}")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("last_stamp_us")
