"""The chat service's tables (the migrations in ../migrations build exactly these)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData()

apps = sa.Table(
    "chat_apps",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("team_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("team_id", "name", name="uq_chat_apps_team_name"),
)

messages = sa.Table(
    "chat_messages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    # Checked at commit (chat_0004): see that migration for why.
    sa.Column(
        "app_id",
        sa.String(36),
        sa.ForeignKey("chat_apps.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
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
    # The latest stamp of the execution's items: the floor for stamping new ones.
    sa.Column("last_stamp_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("execution_id", name="uq_chat_messages_execution"),
    sa.UniqueConstraint("app_id", "request_id", name="uq_chat_messages_app_request"),
    sa.Index("ix_chat_messages_app_cursor", "app_id", "cursor"),
    sa.Index("ix_chat_messages_app_created", "app_id", "created_us", "id"),
)

flow_items = sa.Table(
    "chat_flow_items",
    metadata,
    sa.Column("execution_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("message_id", sa.String(36), sa.ForeignKey("chat_messages.id"), nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("text", sa.Text, nullable=False, server_default=""),
    sa.Column("timestamp_us", sa.BigInteger, nullable=False),
)

tool_calls = sa.Table(
    "chat_tool_calls",
    metadata,
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
