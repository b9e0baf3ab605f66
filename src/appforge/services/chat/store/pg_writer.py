"""The PostgreSQL hot path of UpsertAssistantMessage, on the raw asyncpg connection.

Same rules and same locking as the portable path in `messages.py` (the merge itself is
`domain.plan_upsert`), in fewer round trips and without the ORM layer's per-statement
cost: BEGIN, lock the message row (creating it on first use), load its flow in one
query, write every change in one statement, COMMIT. Statements are prepared once per
connection by asyncpg's statement cache.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.chat.domain import (
    AssistantUpsert,
    FlowChanges,
    Message,
    MessageStatus,
    Role,
    check_owner,
    plan_upsert,
    stamp_missing,
)
from appforge.services.chat.store.rows import (
    StoredFlow,
    applied,
    message_from_row,
    new_id,
)
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import DRIVER_CONNECTION_ERRORS, translate_errors
from appforge.services.common.errors import NotFound

_MESSAGE_COLUMNS = (
    "id, app_id, role, execution_id, request_id, content, status, metadata::text AS metadata,"
    " version, cursor, created_us, updated_us"
)

LOCK_MESSAGE = f"""
SELECT {_MESSAGE_COLUMNS} FROM chat_messages WHERE execution_id = $1 FOR UPDATE
"""

# Creates the message only if the app exists; returns nothing on a conflict or a missing app.
CREATE_MESSAGE = f"""
INSERT INTO chat_messages
    (id, app_id, role, execution_id, content, status, metadata, version, cursor, created_us,
     updated_us)
SELECT $1, a.id, $3, $4, '', $5, '{{}}'::jsonb, 0, 0, $6, $6 FROM chat_apps a WHERE a.id = $2
ON CONFLICT (execution_id) DO NOTHING
RETURNING {_MESSAGE_COLUMNS}
"""

# Items and calls in one round trip; `t` says which table a row comes from.
LOAD_FLOW = """
SELECT 0 AS t, seq, kind, text, timestamp_us,
       NULL::text AS call_id, NULL::int AS position, NULL::text AS name, NULL::smallint AS status,
       NULL::text AS arguments_json, NULL::text AS result_json, NULL::text AS error,
       NULL::bigint AS deadline_us
  FROM chat_flow_items WHERE execution_id = $1
UNION ALL
SELECT 1, seq, NULL, NULL, NULL, call_id, position, name, status, arguments_json, result_json,
       error, deadline_us
  FROM chat_tool_calls WHERE execution_id = $1
"""

# Every write of one call in one statement: the sub-statements touch disjoint rows.
WRITE_CHANGES = """
WITH new_items AS (
    INSERT INTO chat_flow_items (execution_id, seq, message_id, kind, text, timestamp_us)
    SELECT $1, u.seq, $2, u.kind, u.text, u.ts
      FROM unnest($3::bigint[], $4::smallint[], $5::text[], $6::bigint[]) AS u(seq, kind, text, ts)
), grown AS (
    UPDATE chat_flow_items f SET text = u.text
      FROM unnest($7::bigint[], $8::text[]) AS u(seq, text)
     WHERE f.execution_id = $1 AND f.seq = u.seq
), new_calls AS (
    INSERT INTO chat_tool_calls (execution_id, call_id, seq, position, name, status,
                                 arguments_json, result_json, error, deadline_us, updated_us)
    SELECT $1, u.call_id, u.seq, u.position, u.name, u.status, u.args, u.result, u.error,
           u.deadline, $9
      FROM unnest($10::text[], $11::bigint[], $12::int[], $13::text[], $14::smallint[],
                  $15::text[], $16::text[], $17::text[], $18::bigint[])
           AS u(call_id, seq, position, name, status, args, result, error, deadline)
), updated_calls AS (
    UPDATE chat_tool_calls c
       SET name = u.name, status = u.status, arguments_json = u.args, result_json = u.result,
           error = u.error, deadline_us = u.deadline, updated_us = $9
      FROM unnest($19::text[], $20::text[], $21::smallint[], $22::text[], $23::text[],
                  $24::text[], $25::bigint[])
           AS u(call_id, name, status, args, result, error, deadline)
     WHERE c.execution_id = $1 AND c.call_id = u.call_id
), bump AS (
    UPDATE chat_apps SET change_seq = change_seq + 1 WHERE id = $26 RETURNING change_seq
)
UPDATE chat_messages
   SET content = $27, status = $28, metadata = $29::jsonb, version = $30, updated_us = $9,
       cursor = (SELECT change_seq FROM bump)
 WHERE id = $2
RETURNING cursor
"""


class PgAssistantWriter:
    """UpsertAssistantMessage on PostgreSQL through the engine's pooled asyncpg connections."""

    def __init__(self, engine: AsyncEngine, clock: HybridClock) -> None:
        self.engine = engine
        self.clock = clock

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with translate_errors("upserting a message"), self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                async with driver.transaction():
                    yield driver
            except DRIVER_CONNECTION_ERRORS:
                await conn.invalidate()
                raise

    async def upsert(self, upsert: AssistantUpsert) -> tuple[Message, bool]:
        """Create or update the execution's message; returns it and whether it changed."""
        async with self._transaction() as pg:
            row, created = await self._lock(pg, upsert)
            stored = StoredFlow() if created else await self._load(pg, upsert)
            upsert = replace(
                upsert, items=stamp_missing(upsert.items, stored.items, self.clock.tick)
            )
            before = message_from_row(row)
            plan = plan_upsert(
                upsert,
                created=created,
                status=before.status,
                metadata=before.metadata,
                items=stored.items,
                calls=stored.calls,
                positions=stored.positions,
            )
            if not plan.changed:
                return replace(before, flow=plan.flow), False
            now = self.clock.tick()
            version = 1 if created else before.version + 1
            cursor = await pg.fetchval(
                WRITE_CHANGES,
                *_write_args(upsert, before, plan.changes, now),
                upsert.app_id,
                plan.content,
                int(plan.status),
                json.dumps(plan.metadata),
                version,
            )
        return applied(before, plan, version=version, cursor=cursor, now=now), True

    async def _lock(self, pg: Any, upsert: AssistantUpsert) -> tuple[Any, bool]:
        row = await pg.fetchrow(LOCK_MESSAGE, upsert.execution_id)
        created = False
        if row is None:
            now = self.clock.tick()
            row = await pg.fetchrow(
                CREATE_MESSAGE,
                new_id(),
                upsert.app_id,
                int(Role.ASSISTANT),
                upsert.execution_id,
                int(MessageStatus.PENDING),
                now,
            )
            created = row is not None
            if row is None:  # a concurrent twin created it, or the app does not exist
                row = await pg.fetchrow(LOCK_MESSAGE, upsert.execution_id)
                if row is None:
                    raise NotFound(f"no app {upsert.app_id!r}", field="app_id")
        check_owner(upsert, row["app_id"])
        return row, created

    async def _load(self, pg: Any, upsert: AssistantUpsert) -> StoredFlow:
        flow = StoredFlow()
        for row in await pg.fetch(LOAD_FLOW, upsert.execution_id):
            (flow.add_item if row["t"] == 0 else flow.add_call)(row)
        return flow


def _write_args(
    upsert: AssistantUpsert, before: Message, changes: FlowChanges, now: int
) -> tuple[Any, ...]:
    """Parameters $1 to $25 of WRITE_CHANGES: the changes as column arrays."""
    new_items, grown = changes.new_items, changes.grown_texts
    new_calls = [(seq, pos, call) for seq, pos, call in changes.new_calls]
    updated = changes.updated_calls
    return (
        upsert.execution_id,
        before.id,
        [i.seq for i in new_items],
        [int(i.kind) for i in new_items],
        [i.text for i in new_items],
        [i.timestamp_us for i in new_items],
        [i.seq for i in grown],
        [i.text for i in grown],
        now,
        [c.call_id for _, _, c in new_calls],
        [s for s, _, _ in new_calls],
        [p for _, p, _ in new_calls],
        [c.name for _, _, c in new_calls],
        [int(c.status) for _, _, c in new_calls],
        [c.arguments_json for _, _, c in new_calls],
        [c.result_json for _, _, c in new_calls],
        [c.error for _, _, c in new_calls],
        [c.deadline_us for _, _, c in new_calls],
        [c.call_id for c in updated],
        [c.name for c in updated],
        [int(c.status) for c in updated],
        [c.arguments_json for c in updated],
        [c.result_json for c in updated],
        [c.error for c in updated],
        [c.deadline_us for c in updated],
    )
