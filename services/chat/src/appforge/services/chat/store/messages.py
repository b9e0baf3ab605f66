"""Every query the chat service runs through SQLAlchemy (both backends).

Concurrency safety comes from the database: a unique key on `execution_id` with
`INSERT … ON CONFLICT DO NOTHING` creates an execution's message exactly once, and the
message row lock (`SELECT … FOR UPDATE`) serialises every later write to it. Each app
row carries a change counter bumped inside the writing transaction, so change cursors
are dense and commit in order (see `ChatService.watch_app`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.chat.domain import (
    App,
    AssistantUpsert,
    FlowChanges,
    FlowItem,
    Message,
    MessageStatus,
    Role,
    assemble_flow,
    check_owner,
    plan_upsert,
    stamp_missing,
)
from appforge.services.chat.store.pg_writer import PgAssistantWriter
from appforge.services.chat.store.rows import (
    CallsBySeq,
    StoredFlow,
    app_from_row,
    applied,
    call_from_row,
    call_values,
    item_from_row,
    message_from_row,
    new_id,
)
from appforge.services.chat.store.tables import apps, flow_items, messages, tool_calls
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import is_postgres, translate_errors, upsert_insert
from appforge.services.common.errors import AlreadyExists, NotFound


class MessageStore:
    """Apps and messages in PostgreSQL or SQLite."""

    def __init__(self, engine: AsyncEngine, clock: HybridClock) -> None:
        self.engine = engine
        self.clock = clock
        self._pg_writer = (
            PgAssistantWriter(engine, clock, pool_size=engine.pool.size())  # type: ignore[attr-defined]
            if is_postgres(engine)
            else None
        )

    async def close(self) -> None:
        """Release the hot path's connections (the engine is disposed by its owner)."""
        if self._pg_writer is not None:
            await self._pg_writer.close()

    # --- apps ------------------------------------------------------------------------------

    async def create_app(self, team_id: str, name: str, *, return_existing: bool = False) -> App:
        """A new app; the team's app of that name when `return_existing`, else ALREADY_EXISTS."""
        app = App(id=new_id(), team_id=team_id, name=name, created_us=self.clock.tick())
        try:
            async with translate_errors("creating an app"), self.engine.begin() as conn:
                await conn.execute(
                    apps.insert().values(
                        id=app.id, team_id=team_id, name=name, created_us=app.created_us
                    )
                )
        except IntegrityError as exc:
            if return_existing:
                return await self._app_named(team_id, name)
            raise AlreadyExists(
                f"team {team_id!r} already has an app named {name!r}", field="name"
            ) from exc
        return app

    async def _app_named(self, team_id: str, name: str) -> App:
        async with translate_errors("reading an app"), self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(apps).where(apps.c.team_id == team_id, apps.c.name == name)
                )
            ).one()
        return App(id=row.id, team_id=row.team_id, name=row.name, created_us=row.created_us)

    async def get_app(self, app_id: str) -> App:
        async with translate_errors("reading an app"), self.engine.connect() as conn:
            row = (await conn.execute(sa.select(apps).where(apps.c.id == app_id))).first()
        if row is None:
            raise NotFound(f"no app {app_id!r}", field="app_id")
        return app_from_row(row)

    async def _require_app(self, conn: AsyncConnection, app_id: str) -> None:
        found = await conn.scalar(sa.select(apps.c.id).where(apps.c.id == app_id))
        if found is None:
            raise NotFound(f"no app {app_id!r}", field="app_id")

    async def _bump_cursor(self, conn: AsyncConnection, app_id: str) -> int:
        """The app's next change cursor; the row lock orders commits by cursor."""
        stmt = (
            apps.update()
            .where(apps.c.id == app_id)
            .values(change_seq=apps.c.change_seq + 1)
            .returning(apps.c.change_seq)
        )
        return int((await conn.execute(stmt)).scalar_one())

    # --- user messages ---------------------------------------------------------------------

    async def post_user_message(
        self, app_id: str, content: str, request_id: str | None
    ) -> tuple[Message, bool]:
        """Append a user message; with a known request_id, return the first one instead."""
        async with translate_errors("posting a message"), self.engine.begin() as conn:
            await self._require_app(conn, app_id)
            if request_id is not None:
                existing = (
                    await conn.execute(
                        sa.select(messages).where(
                            messages.c.app_id == app_id, messages.c.request_id == request_id
                        )
                    )
                ).first()
                if existing is not None:
                    return message_from_row(existing._mapping), False
            now = self.clock.tick()
            values = {
                "id": new_id(),
                "app_id": app_id,
                "role": int(Role.USER),
                "execution_id": None,
                "request_id": request_id,
                "content": content,
                "status": int(MessageStatus.COMPLETED),
                "metadata": {},
                "version": 1,
                "cursor": 0,
                "created_us": now,
                "updated_us": now,
            }
            stmt = upsert_insert(conn, messages).values(**values)
            if request_id is not None:
                stmt = stmt.on_conflict_do_nothing(index_elements=["app_id", "request_id"])
            inserted = (await conn.execute(stmt.returning(messages.c.id))).first()
            if inserted is None:  # a concurrent twin with the same request_id won
                row = (
                    await conn.execute(
                        sa.select(messages).where(
                            messages.c.app_id == app_id, messages.c.request_id == request_id
                        )
                    )
                ).one()
                return message_from_row(row._mapping), False
            cursor = await self._bump_cursor(conn, app_id)
            await conn.execute(
                messages.update().where(messages.c.id == values["id"]).values(cursor=cursor)
            )
        return message_from_row({**values, "cursor": cursor}), True

    # --- assistant messages ----------------------------------------------------------------

    async def upsert_assistant(self, upsert: AssistantUpsert) -> tuple[Message, bool]:
        """Create or update the execution's one assistant message.

        Returns the message after the call and whether anything changed. On PostgreSQL the
        hot path runs on the raw asyncpg connection (`PgAssistantWriter`); both paths apply
        the same `plan_upsert`.
        """
        if self._pg_writer is not None:
            return await self._pg_writer.upsert(upsert)
        async with translate_errors("upserting a message"), self.engine.begin() as conn:
            row, created = await self._lock_assistant(conn, upsert)
            stored = await self._load_flow(conn, upsert.execution_id)
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
            await self._write_flow(conn, upsert.execution_id, row.id, plan.changes, now)
            cursor = await self._bump_cursor(conn, upsert.app_id)
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
        return applied(
            message_from_row(row._mapping), plan, version=version, cursor=cursor, now=now
        ), True

    async def _lock_assistant(
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
            await self._require_app(conn, upsert.app_id)
            now = self.clock.tick()
            stmt = (
                upsert_insert(conn, messages)
                .values(
                    id=new_id(),
                    app_id=upsert.app_id,
                    role=int(Role.ASSISTANT),
                    execution_id=upsert.execution_id,
                    content="",
                    status=int(MessageStatus.PENDING),
                    metadata={},
                    version=0,
                    cursor=0,
                    created_us=now,
                    updated_us=now,
                )
                .on_conflict_do_nothing(index_elements=["execution_id"])
                .returning(messages.c.id)
            )
            created = (await conn.execute(stmt)).first() is not None
            row = (await conn.execute(lock)).one()
        check_owner(upsert, row.app_id)
        return row, created

    async def _load_flow(self, conn: AsyncConnection, execution_id: str) -> StoredFlow:
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
        self,
        conn: AsyncConnection,
        execution_id: str,
        message_id: str,
        changes: FlowChanges,
        now: int,
    ) -> None:
        if changes.new_items:
            await conn.execute(
                flow_items.insert(),
                [
                    {
                        "execution_id": execution_id,
                        "seq": item.seq,
                        "message_id": message_id,
                        "kind": int(item.kind),
                        "text": item.text,
                        "timestamp_us": item.timestamp_us,
                    }
                    for item in changes.new_items
                ],
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

    # --- reads -----------------------------------------------------------------------------

    async def get_message(self, message_id: str) -> Message:
        found = await self._select_messages(messages.c.id == message_id)
        if not found:
            raise NotFound(f"no message {message_id!r}", field="message_id")
        return found[0]

    async def get_message_by_execution(self, execution_id: str) -> Message:
        found = await self._select_messages(messages.c.execution_id == execution_id)
        if not found:
            raise NotFound(f"no message for execution {execution_id!r}", field="execution_id")
        return found[0]

    async def list_messages(
        self, app_id: str, after: tuple[int, str] | None, limit: int
    ) -> list[Message]:
        """Messages of an app oldest first, strictly after the (created_us, id) key."""
        await self.get_app(app_id)
        where = [messages.c.app_id == app_id]
        if after is not None:
            where.append(sa.tuple_(messages.c.created_us, messages.c.id) > sa.tuple_(*after))
        return await self._select_messages(
            *where, order=(messages.c.created_us, messages.c.id), limit=limit
        )

    async def changed_after(self, app_id: str, cursor: int, limit: int) -> list[Message]:
        """Messages of an app whose last change is after `cursor`, in cursor order."""
        return await self._select_messages(
            messages.c.app_id == app_id,
            messages.c.cursor > cursor,
            order=(messages.c.cursor,),
            limit=limit,
        )

    async def _select_messages(
        self,
        *where: sa.ColumnElement[bool],
        order: Sequence[sa.ColumnElement[Any]] = (),
        limit: int | None = None,
    ) -> list[Message]:
        stmt = sa.select(messages).where(*where).order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit)
        async with translate_errors("reading messages"), self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
            executions = [r.execution_id for r in rows if r.execution_id is not None]
            flows = await self._load_flows(conn, executions) if executions else {}
        return [message_from_row(r._mapping, flows.get(r.execution_id, ())) for r in rows]

    async def _load_flows(
        self, conn: AsyncConnection, execution_ids: Sequence[str]
    ) -> dict[str, tuple[FlowItem, ...]]:
        items: dict[str, dict[int, FlowItem]] = {e: {} for e in execution_ids}
        for row in await conn.execute(
            sa.select(flow_items).where(flow_items.c.execution_id.in_(execution_ids))
        ):
            items[row.execution_id][row.seq] = item_from_row(row._mapping)
        calls: dict[str, CallsBySeq] = {e: {} for e in execution_ids}
        for row in await conn.execute(
            sa.select(tool_calls).where(tool_calls.c.execution_id.in_(execution_ids))
        ):
            calls[row.execution_id][row.call_id] = (
                row.seq,
                row.position,
                call_from_row(row._mapping),
            )
        return {e: assemble_flow(items[e], calls[e]) for e in execution_ids}
