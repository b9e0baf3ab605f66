"""UpsertAssistantMessage through SQLAlchemy: the portable path (SQLite, the embedded default).

A unique key on `execution_id` with `INSERT … ON CONFLICT DO NOTHING` creates an
execution's message exactly once, and the message row lock (`SELECT … FOR UPDATE`)
serialises every later write to it; `domain.plan_upsert` decides what a write changes.
A write reads and writes only the rows it touches, so its cost does not grow with the
message; what it changed comes back as the delta watchers are sent.
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
    ItemKind,
    MessageStatus,
    MessageView,
    UpsertResult,
    check_owner,
    plan_upsert,
    stamp_missing,
)
from appforge.services.chat.store.apps import bump_cursor, require_app
from appforge.services.chat.store.reads import load_flows
from appforge.services.chat.store.rows import (
    StoredFlow,
    applied,
    assistant_message_values,
    call_values,
    item_values,
    message_from_row,
    new_id,
    with_flow,
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

    async def upsert(self, upsert: AssistantUpsert, view: MessageView) -> UpsertResult:
        """Apply the upsert; reads and writes only the rows it touches (FULL reads the
        whole message at the end, in the same transaction)."""
        async with translate_errors("upserting a message"), self.engine.begin() as conn:
            row, created = await self._lock_message(conn, upsert)
            stored = await _load_touched(conn, upsert)
            floor = await _stamp_floor(conn, upsert, stored, row.last_stamp_us)
            upsert = replace(
                upsert, items=stamp_missing(upsert.items, stored.items, floor, self.clock.tick)
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
            before = message_from_row(row._mapping)
            if not plan.changed:
                message, delta = replace(before, content=""), None
            else:
                now = self.clock.tick()
                await _write_flow(conn, upsert.execution_id, row.id, plan.changes, now)
                cursor = await bump_cursor(conn, upsert.app_id)
                version = 1 if created else row.version + 1
                values: dict[str, Any] = {"version": version, "cursor": cursor, "updated_us": now}
                stamps = [i.timestamp_us or 0 for i in plan.changes.new_items]
                if stamps and max(stamps) > row.last_stamp_us:
                    values["last_stamp_us"] = max(stamps)
                if plan.status_changed:
                    values["status"] = int(plan.status)
                if plan.metadata_changes:
                    values["metadata"] = plan.metadata
                await conn.execute(messages.update().where(messages.c.id == row.id).values(values))
                message = applied(before, plan, version=version, cursor=cursor, now=now)
                delta = plan.delta(
                    message_id=row.id,
                    execution_id=upsert.execution_id,
                    version=version,
                    updated_us=now,
                )
            if view is MessageView.FULL:
                flows = await load_flows(conn, [upsert.execution_id])
                message = with_flow(message, flows[upsert.execution_id])
        return UpsertResult(message=message, delta=delta, created=created)

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


async def _load_touched(conn: AsyncConnection, upsert: AssistantUpsert) -> StoredFlow:
    """What is stored of the items and calls the upsert carries, and the batch sizes of
    its tools items: rows by key, never the whole flow."""
    flow = StoredFlow()
    seqs = {item.seq for item in upsert.items}
    if not seqs:
        return flow
    execution = flow_items.c.execution_id == upsert.execution_id
    for row in await conn.execute(
        sa.select(flow_items).where(execution, flow_items.c.seq.in_(seqs))
    ):
        flow.add_item(row._mapping)
    call_ids = {call.call_id for item in upsert.items for call in item.calls}
    if not call_ids:
        return flow
    in_execution = tool_calls.c.execution_id == upsert.execution_id
    for row in await conn.execute(
        sa.select(tool_calls).where(in_execution, tool_calls.c.call_id.in_(call_ids))
    ):
        flow.add_call(row._mapping)
    tools_seqs = {item.seq for item in upsert.items if item.kind is ItemKind.TOOLS}
    sizes = (
        sa.select(tool_calls.c.seq, sa.func.max(tool_calls.c.position))
        .where(in_execution, tool_calls.c.seq.in_(tools_seqs))
        .group_by(tool_calls.c.seq)
    )
    for seq, last in await conn.execute(sizes):
        flow.positions[seq] = max(flow.positions.get(seq, 0), last + 1)
    return flow


async def _stamp_floor(
    conn: AsyncConnection, upsert: AssistantUpsert, stored: StoredFlow, last_stamp_us: int
) -> int:
    """The execution's latest stamp, read only when a new item needs one: the message's
    own record of it, or the last item's stamp if later (items an older release wrote)."""
    if all(i.timestamp_us is not None or i.seq in stored.items for i in upsert.items):
        return last_stamp_us
    stmt = (
        sa.select(flow_items.c.timestamp_us)
        .where(flow_items.c.execution_id == upsert.execution_id)
        .order_by(flow_items.c.seq.desc())
        .limit(1)
    )
    return max(last_stamp_us, int((await conn.execute(stmt)).scalar() or 0))


async def _write_flow(
    conn: AsyncConnection, execution_id: str, message_id: str, changes: FlowChanges, now: int
) -> None:
    """Write only what changed: new items and calls, grown texts, advanced calls."""
    if changes.new_items:
        await conn.execute(
            flow_items.insert(),
            [item_values(execution_id, message_id, item) for item in changes.new_items],
        )
    if changes.appended:
        await conn.execute(
            flow_items.update()
            .where(
                flow_items.c.execution_id == execution_id,
                flow_items.c.seq == sa.bindparam("b_seq"),
            )
            .values(text=flow_items.c.text + sa.bindparam("b_text", type_=sa.Text)),
            [{"b_seq": i.seq, "b_text": i.text} for i in changes.appended],
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
                for _, c in changes.updated_calls
            ],
        )
