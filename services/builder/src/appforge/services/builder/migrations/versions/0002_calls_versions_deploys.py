"""Tool calls, app versions with their files, and the deploy-once key.

Revision ID: builder_0002
Revises: builder_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "builder_0002"
down_revision = "builder_0001"
branch_labels = None
depends_on = None

OPEN = sa.text("status IN (1, 2)")


def upgrade() -> None:
    op.create_table(
        "builder_tool_calls",
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
    )
    op.create_index(
        "ix_builder_tool_calls_open",
        "builder_tool_calls",
        ["deadline_us"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_table(
        "builder_app_versions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(128), nullable=False),
        sa.Column(
            "execution_id", sa.String(36), sa.ForeignKey("builder_executions.id"), nullable=False
        ),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("execution_id", name="uq_builder_app_versions_execution"),
    )
    op.create_table(
        "builder_app_version_files",
        sa.Column(
            "version_id", sa.String(36), sa.ForeignKey("builder_app_versions.id"), primary_key=True
        ),
        sa.Column("path", sa.String(512), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "builder_deploy_requests",
        sa.Column(
            "execution_id", sa.String(36), sa.ForeignKey("builder_executions.id"), primary_key=True
        ),
        sa.Column("app_version_id", sa.String(36), nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=True),
        sa.Column("requested_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("builder_deploy_requests")
    op.drop_table("builder_app_version_files")
    op.drop_table("builder_app_versions")
    op.drop_index("ix_builder_tool_calls_open", table_name="builder_tool_calls")
    op.drop_table("builder_tool_calls")
