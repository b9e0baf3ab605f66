"""Writes in batches: `chat_upsert_assistant_batch_v1` (sql/), and the key from a message to
its app checked at commit.

The batch function runs several writes through `chat_upsert_assistant_v2` in one
transaction, so a busy writer pays one round trip and one commit per batch, not per write.

The key is `DEFERRABLE INITIALLY DEFERRED`: checked at once, the key share lock that
inserting a message takes on its app's row lives beside the change-cursor bumps every
other write makes on that row, and PostgreSQL keeps both in a multixact that every later
reader of the row resolves (the most expensive function of the write path under load,
bench/chat_upsert.py with one app). At commit, the writer has bumped the row itself and the
check adds nothing. Every writer still checks that the app exists before it inserts a
message (NOT_FOUND), so the constraint only guards.

Revision ID: chat_0004
Revises: chat_0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from appforge.services.chat import sql

revision = "chat_0004"
down_revision = "chat_0003"
branch_labels = None
depends_on = None

FUNCTION = "chat_upsert_assistant_batch_v1"
SIGNATURE = "(jsonb)"
CONSTRAINT = "chat_messages_app_id_fkey"
# SQLite's key has no name: batch mode finds it by this convention (Alembic's documented way).
_SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_SQLITE_KEY = "fk_chat_messages_app_id_chat_apps"


def _sqlite_key(*, deferred: bool) -> None:
    with op.batch_alter_table(
        "chat_messages", naming_convention=_SQLITE_NAMES, recreate="always"
    ) as batch:
        batch.drop_constraint(_SQLITE_KEY, type_="foreignkey")
        batch.create_foreign_key(
            _SQLITE_KEY,
            "chat_apps",
            ["app_id"],
            ["id"],
            deferrable=True if deferred else None,
            initially="DEFERRED" if deferred else None,
        )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_key(deferred=True)
        return
    op.execute(
        f"ALTER TABLE chat_messages ALTER CONSTRAINT {CONSTRAINT} DEFERRABLE INITIALLY DEFERRED"
    )
    op.execute(sql.load(FUNCTION))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_key(deferred=False)
        return
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}{SIGNATURE}")
    op.execute(f"ALTER TABLE chat_messages ALTER CONSTRAINT {CONSTRAINT} NOT DEFERRABLE")
