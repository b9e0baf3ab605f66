"""The chat service's first schema: apps, messages, flow items, tool calls.

Revision ID: chat_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "chat_0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "chat_apps",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("team_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.UniqueConstraint("team_id", "name", name="uq_chat_apps_team_name"),
    )
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36), sa.ForeignKey("chat_apps.id"), nullable=False),
        sa.Column("role", sa.SmallInteger, nullable=False),
        sa.Column("execution_id", sa.String(128), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("content", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("cursor", sa.BigInteger, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("execution_id", name="uq_chat_messages_execution"),
        sa.UniqueConstraint("app_id", "request_id", name="uq_chat_messages_app_request"),
    )
    op.create_index("ix_chat_messages_app_cursor", "chat_messages", ["app_id", "cursor"])
    op.create_index("ix_chat_messages_app_created", "chat_messages", ["app_id", "created_us", "id"])
    op.create_table(
        "chat_flow_items",
        sa.Column("execution_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("message_id", sa.String(36), sa.ForeignKey("chat_messages.id"), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("timestamp_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "chat_tool_calls",
        sa.Column("execution_id", sa.String(128), primary_key=True),
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("arguments_json", sa.Text, nullable=False, server_default=""),
        sa.Column("result_json", sa.Text, nullable=False, server_default=""),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("deadline_us", sa.BigInteger, nullable=True),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chat_tool_calls")
    op.drop_table("chat_flow_items")
    op.drop_index("ix_chat_messages_app_created", table_name="chat_messages")
    op.drop_index("ix_chat_messages_app_cursor", table_name="chat_messages")
    op.drop_table("chat_messages")
    op.drop_table("chat_apps")
