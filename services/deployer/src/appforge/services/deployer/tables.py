"""The deployer's tables (its migrations build exactly these)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData()

deployments = sa.Table(
    "deploy_deployments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("app_id", sa.String(128), nullable=False),
    sa.Column("app_version_id", sa.String(128), nullable=False),
    sa.Column("execution_id", sa.String(128), nullable=False),
    sa.Column("target", sa.String(16), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("attempt_timeout", sa.Float, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("initial_backoff", sa.Float, nullable=False),
    sa.Column("max_backoff", sa.Float, nullable=False),
    sa.Column("overall_deadline", sa.Float, nullable=True),
    sa.Column("attempts_made", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_us", sa.BigInteger, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_us", sa.BigInteger, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("url", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Column("finished_us", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("app_version_id", name="uq_deploy_deployments_version"),
)

# Claims read the head of the queue without sorting the backlog: one partial index for
# waiting deployments in due order, one for running ones by lease expiry.
_WAITING = sa.text("status IN (1, 3)")
_RUNNING = sa.text("status = 2")
sa.Index(
    "ix_deploy_deployments_waiting",
    deployments.c.next_attempt_us,
    postgresql_where=_WAITING,
    sqlite_where=_WAITING,
)
sa.Index(
    "ix_deploy_deployments_leased",
    deployments.c.lease_expires_us,
    postgresql_where=_RUNNING,
    sqlite_where=_RUNNING,
)

attempts = sa.Table(
    "deploy_attempts",
    metadata,
    sa.Column(
        "deployment_id", sa.String(36), sa.ForeignKey("deploy_deployments.id"), primary_key=True
    ),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("worker_id", sa.String(64), nullable=False),
    sa.Column("started_us", sa.BigInteger, nullable=False),
    sa.Column("finished_us", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.SmallInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
)

files = sa.Table(
    "deploy_files",
    metadata,
    sa.Column(
        "deployment_id", sa.String(36), sa.ForeignKey("deploy_deployments.id"), primary_key=True
    ),
    sa.Column("path", sa.String(512), primary_key=True),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False, server_default=""),
)

# Notices for the chat service, written in the transaction that ends a deployment and
# delivered until chat acknowledges them.
outbox = sa.Table(
    "deploy_outbox",
    metadata,
    sa.Column(
        "deployment_id", sa.String(36), sa.ForeignKey("deploy_deployments.id"), primary_key=True
    ),
    sa.Column("app_id", sa.String(128), nullable=False),
    sa.Column("execution_id", sa.String(128), nullable=False),
    sa.Column("failed", sa.Boolean, nullable=False),
    sa.Column("metadata", _JSON, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("next_try_us", sa.BigInteger, nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("delivered_us", sa.BigInteger, nullable=True),
    sa.Index("ix_deploy_outbox_due", "delivered_us", "next_try_us"),
)
