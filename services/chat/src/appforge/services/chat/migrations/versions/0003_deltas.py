"""Writes that cost what they change: the indexes the delta upsert reads through, and
`chat_upsert_assistant_v2` (sql/chat_upsert_assistant_v2.sql) beside the first version.

The stamp floor (`max(timestamp_us)`) and a batch's next position (`max(position)`) were
scans of the execution's rows; these indexes make both a lookup. `chat_upsert_assistant`
(v1) stays, so replicas of the previous release keep working during a rolling upgrade; a
later migration drops it.

Revision ID: chat_0003
Revises: chat_0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from appforge.services.chat import sql

revision = "chat_0003"
down_revision = "chat_0002"
branch_labels = None
depends_on = None

FUNCTION = "chat_upsert_assistant_v2"
SIGNATURE = "(text, text, text, jsonb, smallint, jsonb, bigint)"


def upgrade() -> None:
    op.create_index(
        "ix_chat_flow_items_execution_stamp", "chat_flow_items", ["execution_id", "timestamp_us"]
    )
    op.create_index(
        "ix_chat_tool_calls_execution_item", "chat_tool_calls", ["execution_id", "seq", "position"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sql.load(FUNCTION))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}{SIGNATURE}")
    op.drop_index("ix_chat_tool_calls_execution_item", table_name="chat_tool_calls")
    op.drop_index("ix_chat_flow_items_execution_stamp", table_name="chat_flow_items")
