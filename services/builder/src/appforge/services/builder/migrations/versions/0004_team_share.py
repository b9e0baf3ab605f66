"""Fair share per team: each execution records its app's team, and running executions are
counted per team (APPFORGE_TEAM_MAX_RUNNING_BUILDS).

Revision ID: builder_0004
Revises: builder_0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "builder_0004"
down_revision = "builder_0003"
branch_labels = None
depends_on = None

RUNNING = sa.text("status = 1")


def upgrade() -> None:
    with op.batch_alter_table("builder_executions") as batch:
        # Executions from before this revision have no team: they count for none.
        batch.add_column(sa.Column("team_id", sa.String(128), nullable=False, server_default=""))
    op.create_index(
        "ix_builder_executions_team_running",
        "builder_executions",
        ["team_id"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )


def downgrade() -> None:
    op.drop_index("ix_builder_executions_team_running", "builder_executions")
    with op.batch_alter_table("builder_executions") as batch:
        batch.drop_column("team_id")
