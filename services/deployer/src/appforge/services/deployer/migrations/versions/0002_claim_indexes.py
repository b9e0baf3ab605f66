"""Partial indexes so a claim reads the head of the queue instead of sorting the backlog.

Revision ID: deployer_0002
Revises: deployer_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "deployer_0002"
down_revision = "deployer_0001"
branch_labels = None
depends_on = None

WAITING = sa.text("status IN (1, 3)")
RUNNING = sa.text("status = 2")


def upgrade() -> None:
    op.drop_index("ix_deploy_deployments_due", table_name="deploy_deployments")
    op.create_index(
        "ix_deploy_deployments_waiting",
        "deploy_deployments",
        ["next_attempt_us"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.create_index(
        "ix_deploy_deployments_leased",
        "deploy_deployments",
        ["lease_expires_us"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )


def downgrade() -> None:
    op.drop_index("ix_deploy_deployments_leased", table_name="deploy_deployments")
    op.drop_index("ix_deploy_deployments_waiting", table_name="deploy_deployments")
    op.create_index(
        "ix_deploy_deployments_due", "deploy_deployments", ["status", "next_attempt_us"]
    )
