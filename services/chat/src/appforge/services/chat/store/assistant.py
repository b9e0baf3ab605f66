"""UpsertAssistantMessage through SQLAlchemy: the portable path (SQLite, the embedded default).

A unique key on `execution_id` with `INSERT … ON CONFLICT DO NOTHING` creates an
execution's message exactly once, and the message row lock (`SELECT … FOR UPDATE`)
serialises every later write to it; `domain.plan_upsert` decides what a write changes.
PostgreSQL runs the same rules in one statement instead (see `pg_writer.py`);
tests/integration/test_store_agrees_with_domain.py keeps both in agreement with the domain.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.chat.domain import (
    AssistantUpsert,
    FlowChanges,
    Message,
    MessageStatus,
    check_owner,
    plan_upsert,
    stamp_missing,
)
from appforge.services.chat.store.apps import bump_cursor, require_app
from appforge.services.chat.store.rows import (
    StoredFlow,
    applied,
    assistant_message_values,
    call_values,
    item_values,
    message_from_row,
    new_id,
)
from appforge.services.chat.store.tables import flow_items, messages, tool_calls
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import translate_errors, upsert_insert


class SqlAssistantWriter:
    """Create or update an execution's one assistant message in one transaction."""

    def __init__(self, engine: AsyncEngine, clock: HybridClock) -> None:
        self.engine = engine
        self.clock = clock

    async def close(self) -> None:
        """Nothing of its own to release: it borrows the engine's connections."""

    async def upsert(self, upsert: AssistantUpsert) -> tuple[Message, bool]:
        """The message after the call, and whether anything changed."""
        async with translate_errors("upserting a message"), self.engine.begin() as conn:
            row, created = await self._lock_message(conn, upsert)
            stored = await _load_flow(conn, upsert.execution_id)
            upsert = replace(
                upsert, items=stamp_missing(upsert.items, stored.items, self.clock.tick)
            )
            plan = plan_upsert(
                upsert,
                created=created,
                status=MessageStatus(row.status),
                metadata=row.metadata or {},
                items=stored.items,
                calls=stored.calls,
                positions=stored.positions,
            )
            if not plan.changed:
                return message_from_row(row._mapping, plan.flow), False
            now = self.clock.tick()
            await _write_flow(conn, upsert.execution_id, row.id, plan.changes, now)
            cursor = await bump_cursor(conn, upsert.app_id)
            version = 1 if created else row.version + 1
            await conn.execute(
                messages.update()
                .where(messages.c.id == row.id)
                .values(
                    content=plan.content,
                    status=int(plan.status),
                    metadata=plan.metadata,
                    version=version,
                    cursor=cursor,
                    updated_us=now,
                )
            )
        before = message_from_row(row._mapping)
        return applied(before, plan, version=version, cursor=cursor, now=now), True

    async def _lock_message(
        self, conn: AsyncConnection, upsert: AssistantUpsert
    ) -> tuple[sa.Row[Any], bool]:
        """The execution's message row, locked; created (exactly once) if missing."""
        lock = (
            sa.select(messages)
            .where(messages.c.execution_id == upsert.execution_id)
            .with_for_update()
        )
        row = (await conn.execute(lock)).first()
        created = False
        if row is None:
            await require_app(conn, upsert.app_id)
            values = assistant_message_values(
                message_id=new_id(),
                app_id=upsert.app_id,
                execution_id=upsert.execution_id,
                now=self.clock.tick(),
            )
            stmt = (
                upsert_insert(conn, messages)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["execution_id"])
                .returning(messages.c.id)
            )
            created = (await conn.execute(stmt)).first() is not None
            row = (await conn.execute(lock)).one()
        check_owner(upsert, row.app_id)
        return row, created


async def _load_flow(conn: AsyncConnection, execution_id: str) -> StoredFlow:
    flow = StoredFlow()
    for row in await conn.execute(
        sa.select(flow_items).where(flow_items.c.execution_id == execution_id)
    ):
        flow.add_item(row._mapping)
    for row in await conn.execute(
        sa.select(tool_calls).where(tool_calls.c.execution_id == execution_id)
    ):
        flow.add_call(row._mapping)
    return flow


async def _write_flow(
    conn: AsyncConnection, execution_id: str, message_id: str, changes: FlowChanges, now: int
) -> None:
    """Write only what changed: new items and calls, grown texts, advanced calls."""
    if changes.new_items:
        await conn.execute(
            flow_items.insert(),
            [item_values(execution_id, message_id, item) for item in changes.new_items],
        )
    if changes.grown_texts:
        await conn.execute(
            flow_items.update()
            .where(
                flow_items.c.execution_id == execution_id,
                flow_items.c.seq == sa.bindparam("b_seq"),
            )
            .values(text=sa.bindparam("b_text")),
            [{"b_seq": i.seq, "b_text": i.text} for i in changes.grown_texts],
        )
    if changes.new_calls:
        await conn.execute(
            tool_calls.insert(),
            [call_values(execution_id, s, p, c, now) for s, p, c in changes.new_calls],
        )
    if changes.updated_calls:
        await conn.execute(
            tool_calls.update()
            .where(
                tool_calls.c.execution_id == execution_id,
                tool_calls.c.call_id == sa.bindparam("b_call_id"),
            )
            .values(
                name=sa.bindparam("b_name"),
                status=sa.bindparam("b_status"),
                arguments_json=sa.bindparam("b_arguments"),
                result_json=sa.bindparam("b_result"),
                error=sa.bindparam("b_error"),
                deadline_us=sa.bindparam("b_deadline"),
                updated_us=now,
            ),
            [
                {
                    "b_call_id": c.call_id,
                    "b_name": c.name,
                    "b_status": int(c.status),
                    "b_arguments": c.arguments_json,
                    "b_result": c.result_json,
                    "b_error": c.error,
                    "b_deadline": c.deadline_us,
                }
                for c in changes.updated_calls
            ],
        )
