"""`MessageStore`: the one object the chat service talks to about its tables.

It owns the engine, the clock and the assistant writer of its backend, and hands each
operation to the module of its concept: `apps`, `user_messages`, `assistant` (or
`pg_writer` on PostgreSQL) and `reads`. Every method returns domain values.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.chat.domain import App, AssistantUpsert, Message, MessageView, UpsertResult
from appforge.services.chat.store import apps, reads, user_messages
from appforge.services.chat.store.assistant import SqlAssistantWriter
from appforge.services.chat.store.pg_writer import PgAssistantWriter
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import is_postgres


class MessageStore:
    """Apps and messages in PostgreSQL or SQLite."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: HybridClock,
        *,
        writer_pool_size: int | None = None,
        write_batches: int = 2,
    ) -> None:
        """`writer_pool_size`: the PostgreSQL hot path's own connections (the engine's pool
        size when not given; see `chat.bootstrap` for how a process splits its budget);
        `write_batches`: how many batches of upserts it runs at once (APPFORGE_WRITE_BATCHES)."""
        self.engine = engine
        self.clock = clock
        self._writer: PgAssistantWriter | SqlAssistantWriter
        if is_postgres(engine):
            size = writer_pool_size or engine.pool.size()  # type: ignore[attr-defined]
            self._writer = PgAssistantWriter(
                engine, clock, pool_size=size, batches_in_flight=write_batches
            )
        else:
            self._writer = SqlAssistantWriter(engine, clock)

    async def close(self) -> None:
        """Release the hot path's connections (the engine is disposed by its owner)."""
        await self._writer.close()

    # --- apps ------------------------------------------------------------------------------

    async def create_app(self, team_id: str, name: str, *, return_existing: bool = False) -> App:
        """A new app; the team's app of that name when `return_existing`, else ALREADY_EXISTS."""
        return await apps.create_app(
            self.engine, self.clock, team_id, name, return_existing=return_existing
        )

    async def get_app(self, app_id: str) -> App:
        return await apps.get_app(self.engine, app_id)

    # --- writes ----------------------------------------------------------------------------

    async def post_user_message(
        self, app_id: str, content: str, request_id: str | None
    ) -> tuple[Message, bool]:
        """Append a user message; with a known request_id, return the first one instead."""
        return await user_messages.post_user_message(
            self.engine, self.clock, app_id, content, request_id
        )

    async def upsert_assistant(
        self, upsert: AssistantUpsert, view: MessageView = MessageView.BASIC
    ) -> UpsertResult:
        """Create or update the execution's one assistant message.

        Returns the message after the call (whole with FULL, else without flow and
        content) and what changed. On PostgreSQL the hot path runs on the raw asyncpg
        connection (`PgAssistantWriter`), elsewhere through SQLAlchemy
        (`SqlAssistantWriter`); both apply the domain's merge rules.
        """
        return await self._writer.upsert(upsert, view)

    # --- reads -----------------------------------------------------------------------------

    async def get_message(self, message_id: str) -> Message:
        return await reads.get_message(self.engine, message_id)

    async def get_message_by_execution(self, execution_id: str) -> Message:
        return await reads.get_message_by_execution(self.engine, execution_id)

    async def list_messages(
        self, app_id: str, after: tuple[int, str] | None, limit: int
    ) -> list[Message]:
        """Messages of an app oldest first, strictly after the (created_us, id) key."""
        await self.get_app(app_id)
        return await reads.page_of_app(self.engine, app_id, after, limit)

    async def changed_after(self, app_id: str, cursor: int, limit: int) -> list[Message]:
        """Messages of an app whose last change is after `cursor`, in cursor order."""
        return await reads.changed_after(self.engine, app_id, cursor, limit)
