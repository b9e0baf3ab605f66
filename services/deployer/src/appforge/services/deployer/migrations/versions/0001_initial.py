"""The deployer's first schema: deployments, attempts, artifacts, the outbox of notices.

Revision ID: deployer_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "deployer_0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "deploy_deployments",
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
    op.create_index(
        "ix_deploy_deployments_due", "deploy_deployments", ["status", "next_attempt_us"]
    )
    op.create_table(
        "deploy_attempts",
        sa.Column(
            "deployment_id",
            sa.String(36),
            sa.ForeignKey("deploy_deployments.id"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("started_us", sa.BigInteger, nullable=False),
        sa.Column("finished_us", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "deploy_files",
        sa.Column(
            "deployment_id",
            sa.String(36),
            sa.ForeignKey("deploy_deployments.id"),
            primary_key=True,
        ),
        sa.Column("path", sa.String(512), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False, server_default=""),
    )
    op.create_table(
        "deploy_outbox",
        sa.Column(
            "deployment_id",
            sa.String(36),
            sa.ForeignKey("deploy_deployments.id"),
            primary_key=True,
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
    )
    op.create_index("ix_deploy_outbox_due", "deploy_outbox", ["delivered_us", "next_try_us"])


def downgrade() -> None:
    op.drop_index("ix_deploy_outbox_due", table_name="deploy_outbox")
    op.drop_table("deploy_outbox")
    op.drop_table("deploy_files")
    op.drop_table("deploy_attempts")
    op.drop_index("ix_deploy_deployments_due", table_name="deploy_deployments")
    op.drop_table("deploy_deployments")
