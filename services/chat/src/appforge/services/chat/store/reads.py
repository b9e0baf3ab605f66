"""Reading messages with their flows: by id, by execution, a page of an app, a change feed.

Each read is one statement for the messages and one per flow table for all of their
executions together, never one query per message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.chat.domain import FlowItem, Message, assemble_flow
from appforge.services.chat.store.rows import StoredFlow, message_from_row, with_flow
from appforge.services.chat.store.tables import flow_items, messages, tool_calls
from appforge.services.common.db import is_postgres, translate_errors
from appforge.services.common.errors import NotFound


async def get_message(engine: AsyncEngine, message_id: str) -> Message:
    found = await select_messages(engine, messages.c.id == message_id)
    if not found:
        raise NotFound(f"no message {message_id!r}", field="message_id")
    return found[0]


async def get_message_by_execution(engine: AsyncEngine, execution_id: str) -> Message:
    found = await select_messages(engine, messages.c.execution_id == execution_id)
    if not found:
        raise NotFound(f"no message for execution {execution_id!r}", field="execution_id")
    return found[0]


async def page_of_app(
    engine: AsyncEngine, app_id: str, after: tuple[int, str] | None, limit: int
) -> list[Message]:
    """Messages of an app oldest first, strictly after the (created_us, id) key."""
    where = [messages.c.app_id == app_id]
    if after is not None:
        where.append(sa.tuple_(messages.c.created_us, messages.c.id) > sa.tuple_(*after))
    return await select_messages(
        engine, *where, order=(messages.c.created_us, messages.c.id), limit=limit
    )


async def changed_after(engine: AsyncEngine, app_id: str, cursor: int, limit: int) -> list[Message]:
    """Messages of an app whose last change is after `cursor`, in cursor order."""
    return await select_messages(
        engine,
        messages.c.app_id == app_id,
        messages.c.cursor > cursor,
        order=(messages.c.cursor,),
        limit=limit,
    )


async def select_messages(
    engine: AsyncEngine,
    *where: sa.ColumnElement[bool],
    order: Sequence[sa.ColumnElement[Any]] = (),
    limit: int | None = None,
) -> list[Message]:
    """The messages matching `where`, each with its whole flow."""
    stmt = sa.select(messages).where(*where).order_by(*order)
    if limit is not None:
        stmt = stmt.limit(limit)
    async with translate_errors("reading messages"), _snapshot(engine) as conn:
        rows = (await conn.execute(stmt)).all()
        executions = [r.execution_id for r in rows if r.execution_id is not None]
        flows = await load_flows(conn, executions) if executions else {}
    return [with_flow(message_from_row(r._mapping), flows.get(r.execution_id, ())) for r in rows]


@contextlib.asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements all see one state of the database.

    A message and its flow are read in separate statements; under READ COMMITTED a write
    committing between them would pair a message's version with a later flow, and a
    watcher applying deltas to that snapshot would go wrong. PostgreSQL reads in one
    REPEATABLE READ transaction; SQLite has one connection, which writes queue behind.
    """
    async with engine.connect() as conn:
        if is_postgres(engine):
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn
        else:
            yield conn


async def load_flows(
    conn: AsyncConnection, execution_ids: Sequence[str]
) -> dict[str, tuple[FlowItem, ...]]:
    stored = {e: StoredFlow() for e in execution_ids}
    for row in await conn.execute(
        sa.select(flow_items).where(flow_items.c.execution_id.in_(execution_ids))
    ):
        stored[row.execution_id].add_item(row._mapping)
    for row in await conn.execute(
        sa.select(tool_calls).where(tool_calls.c.execution_id.in_(execution_ids))
    ):
        stored[row.execution_id].add_call(row._mapping)
    return {e: assemble_flow(flow.items, flow.calls) for e, flow in stored.items()}
