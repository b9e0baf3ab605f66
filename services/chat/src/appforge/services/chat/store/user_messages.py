"""User messages: appended once per `request_id` (the idempotency key), never changed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.chat.domain import Message
from appforge.services.chat.store.apps import bump_cursor, require_app
from appforge.services.chat.store.rows import message_from_row, new_id, user_message_values
from appforge.services.chat.store.tables import messages
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import translate_errors, upsert_insert


async def post_user_message(
    engine: AsyncEngine,
    clock: HybridClock,
    app_id: str,
    content: str,
    request_id: str | None,
) -> tuple[Message, bool]:
    """Append a user message; with a known request_id, return the first one instead.

    Returns the message and whether this call created it.
    """
    async with translate_errors("posting a message"), engine.begin() as conn:
        await require_app(conn, app_id)
        if request_id is not None:
            existing = (await conn.execute(_by_request(app_id, request_id))).first()
            if existing is not None:
                return message_from_row(existing._mapping), False
        values = user_message_values(
            message_id=new_id(),
            app_id=app_id,
            content=content,
            request_id=request_id,
            now=clock.tick(),
        )
        stmt = upsert_insert(conn, messages).values(**values)
        if request_id is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=["app_id", "request_id"])
        inserted = (await conn.execute(stmt.returning(messages.c.id))).first()
        if inserted is None:  # a concurrent twin with the same request_id won
            twin = (await conn.execute(_by_request(app_id, request_id))).one()
            return message_from_row(twin._mapping), False
        cursor = await bump_cursor(conn, app_id)
        await conn.execute(
            messages.update().where(messages.c.id == values["id"]).values(cursor=cursor)
        )
    return message_from_row({**values, "cursor": cursor}), True


def _by_request(app_id: str, request_id: str | None) -> sa.Select[Any]:
    return sa.select(messages).where(
        messages.c.app_id == app_id, messages.c.request_id == request_id
    )
