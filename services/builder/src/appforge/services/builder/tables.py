"""The builder's tables (its migrations build exactly these)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

executions = sa.Table(
    "builder_executions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("app_id", sa.String(128), nullable=False),
    sa.Column("team_id", sa.String(128), nullable=False, server_default=""),  # the app's
    sa.Column("user_message_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("model", sa.String(32), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False, server_default=""),
    # The flow's ordering state: the last seq and stamp handed out (invariant 2).
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_stamp_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("heartbeat_us", sa.BigInteger, nullable=True),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("finished_us", sa.BigInteger, nullable=True),
    # The execution's one assistant message, known once chat created it.
    sa.Column("message_id", sa.String(128), nullable=False, server_default=""),
    # The final-notice outbox: a finished execution whose end chat has not acknowledged
    # (notified_us NULL) is delivered again once notice_due_us passes.
    sa.Column("notice_due_us", sa.BigInteger, nullable=True),
    sa.Column("notified_us", sa.BigInteger, nullable=True),
    # One execution per user message.
    sa.UniqueConstraint("app_id", "user_message_id", name="uq_builder_executions_user_message"),
)
# "Which running executions stopped heartbeating?"
sa.Index(
    "ix_builder_executions_heartbeat",
    executions.c.heartbeat_us,
    postgresql_where=sa.text("status = 1"),
    sqlite_where=sa.text("status = 1"),
)
# "How many executions does this team run?" (the fair share)
sa.Index(
    "ix_builder_executions_team_running",
    executions.c.team_id,
    postgresql_where=sa.text("status = 1"),
    sqlite_where=sa.text("status = 1"),
)
# "Which finished executions still owe chat their final notice?"
sa.Index(
    "ix_builder_executions_notice_due",
    executions.c.notice_due_us,
    postgresql_where=sa.text("notified_us IS NULL AND status <> 1"),
    sqlite_where=sa.text("notified_us IS NULL AND status <> 1"),
)

# Tool calls of every execution; status only moves forward (pending 1, streaming 2, then a
# terminal state), which the store enforces in its WHERE clauses.
tool_calls = sa.Table(
    "builder_tool_calls",
    metadata,
    sa.Column(
        "execution_id", sa.String(36), sa.ForeignKey("builder_executions.id"), primary_key=True
    ),
    sa.Column("call_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("arguments_json", sa.Text, nullable=False, server_default=""),
    sa.Column("result_json", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("deadline_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    # The stamp of the tools item (seq) the call belongs to.
    sa.Column("stamp_us", sa.BigInteger, nullable=False, server_default="0"),
)
# The sweeper's question, "which unfinished calls are past their deadline?", reads this.
sa.Index(
    "ix_builder_tool_calls_open",
    tool_calls.c.deadline_us,
    postgresql_where=sa.text("status IN (1, 2)"),
    sqlite_where=sa.text("status IN (1, 2)"),
)

app_versions = sa.Table(
    "builder_app_versions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("app_id", sa.String(128), nullable=False),
    sa.Column(
        "execution_id", sa.String(36), sa.ForeignKey("builder_executions.id"), nullable=False
    ),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("execution_id", name="uq_builder_app_versions_execution"),
)

app_version_files = sa.Table(
    "builder_app_version_files",
    metadata,
    sa.Column(
        "version_id", sa.String(36), sa.ForeignKey("builder_app_versions.id"), primary_key=True
    ),
    sa.Column("path", sa.String(512), primary_key=True),
    sa.Column("content", sa.LargeBinary, nullable=False),
)

# One row per execution that asked for a deployment: the unique key, not a flag, is what
# makes Deploy happen exactly once per execution.
deploy_requests = sa.Table(
    "builder_deploy_requests",
    metadata,
    sa.Column(
        "execution_id", sa.String(36), sa.ForeignKey("builder_executions.id"), primary_key=True
    ),
    sa.Column("app_version_id", sa.String(36), nullable=False),
    sa.Column("deployment_id", sa.String(36), nullable=True),
    sa.Column("requested_us", sa.BigInteger, nullable=False),
)
