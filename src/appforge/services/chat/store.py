"""The chat service's tables and every query it runs.

Concurrency safety comes from the database: a unique key on `execution_id` with
`INSERT … ON CONFLICT DO NOTHING` creates an execution's message exactly once, and the
message row lock (`SELECT … FOR UPDATE`) serialises every later write to it. Each app
row carries a change counter bumped inside the writing transaction, so change cursors
are dense and commit in order (see `ChatService.watch_app`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.chat.domain import (
    App,
    AssistantUpsert,
    FlowChanges,
    FlowItem,
    ItemKind,
    Message,
    MessageStatus,
    Role,
    ToolCall,
    ToolStatus,
    apply_changes,
    assemble_content,
    assemble_flow,
    merge_flow,
    merge_metadata,
    merge_status,
)
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import is_postgres, translate_errors
from appforge.services.common.errors import AlreadyExists, FailedPrecondition, NotFound

metadata = sa.MetaData()
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

apps = sa.Table(
    "chat_apps",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("team_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("team_id", "name", name="uq_chat_apps_team_name"),
)

messages = sa.Table(
    "chat_messages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("app_id", sa.String(36), sa.ForeignKey("chat_apps.id"), nullable=False),
    sa.Column("role", sa.SmallInteger, nullable=False),
    sa.Column("execution_id", sa.String(128), nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("content", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("metadata", _JSON, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("cursor", sa.BigInteger, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("execution_id", name="uq_chat_messages_execution"),
    sa.UniqueConstraint("app_id", "request_id", name="uq_chat_messages_app_request"),
    sa.Index("ix_chat_messages_app_cursor", "app_id", "cursor"),
    sa.Index("ix_chat_messages_app_created", "app_id", "created_us", "id"),
)

flow_items = sa.Table(
    "chat_flow_items",
    metadata,
    sa.Column("execution_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("message_id", sa.String(36), sa.ForeignKey("chat_messages.id"), nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("text", sa.Text, nullable=False, server_default=""),
    sa.Column("timestamp_us", sa.BigInteger, nullable=False),
)

tool_calls = sa.Table(
    "chat_tool_calls",
    metadata,
    sa.Column("execution_id", sa.String(128), primary_key=True),
    sa.Column("call_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("arguments_json", sa.Text, nullable=False, server_default=""),
    sa.Column("result_json", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("deadline_us", sa.BigInteger, nullable=True),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
)

CallsBySeq = dict[str, tuple[int, int, ToolCall]]


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """A dialect-specific INSERT that supports ON CONFLICT."""
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)


def _new_id() -> str:
    return str(uuid.uuid4())


def _app(row: sa.Row[Any]) -> App:
    return App(id=row.id, team_id=row.team_id, name=row.name, created_us=row.created_us)


def _message(row: sa.Row[Any], flow: tuple[FlowItem, ...] = ()) -> Message:
    return Message(
        id=row.id,
        app_id=row.app_id,
        role=Role(row.role),
        execution_id=row.execution_id,
        request_id=row.request_id,
        content=row.content,
        status=MessageStatus(row.status),
        metadata=dict(row.metadata or {}),
        version=row.version,
        cursor=row.cursor,
        created_us=row.created_us,
        updated_us=row.updated_us,
        flow=flow,
    )


def _item(row: sa.Row[Any]) -> FlowItem:
    return FlowItem(
        seq=row.seq, kind=ItemKind(row.kind), timestamp_us=row.timestamp_us, text=row.text
    )


def _call(row: sa.Row[Any]) -> ToolCall:
    return ToolCall(
        call_id=row.call_id,
        name=row.name,
        status=ToolStatus(row.status),
        arguments_json=row.arguments_json,
        result_json=row.result_json,
        error=row.error,
        deadline_us=row.deadline_us,
    )


def _call_values(
    execution_id: str, seq: int, position: int, call: ToolCall, now: int
) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "call_id": call.call_id,
        "seq": seq,
        "position": position,
        "name": call.name,
        "status": int(call.status),
        "arguments_json": call.arguments_json,
        "result_json": call.result_json,
        "error": call.error,
        "deadline_us": call.deadline_us,
        "updated_us": now,
    }


class MessageStore:
    """Apps and messages in PostgreSQL or SQLite."""

    def __init__(self, engine: AsyncEngine, clock: HybridClock) -> None:
        self.engine = engine
        self.clock = clock

    # --- apps ------------------------------------------------------------------------------

    async def create_app(self, team_id: str, name: str) -> App:
        app = App(id=_new_id(), team_id=team_id, name=name, created_us=self.clock.tick())
        try:
            async with translate_errors("creating an app"), self.engine.begin() as conn:
                await conn.execute(
                    apps.insert().values(
                        id=app.id, team_id=team_id, name=name, created_us=app.created_us
                    )
                )
        except IntegrityError as exc:
            raise AlreadyExists(
                f"team {team_id!r} already has an app named {name!r}", field="name"
            ) from exc
        return app

    async def get_app(self, app_id: str) -> App:
        async with translate_errors("reading an app"), self.engine.connect() as conn:
            row = (await conn.execute(sa.select(apps).where(apps.c.id == app_id))).first()
        if row is None:
            raise NotFound(f"no app {app_id!r}", field="app_id")
        return _app(row)

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
                    return _message(existing), False
            now = self.clock.tick()
            values = {
                "id": _new_id(),
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
            stmt = _insert(conn, messages).values(**values)
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
                return _message(row), False
            cursor = await self._bump_cursor(conn, app_id)
            await conn.execute(
                messages.update().where(messages.c.id == values["id"]).values(cursor=cursor)
            )
        return Message(**{**_plain(values), "cursor": cursor}), True

    # --- assistant messages ----------------------------------------------------------------

    async def upsert_assistant(self, upsert: AssistantUpsert) -> tuple[Message, bool]:
        """Create or update the execution's one assistant message.

        Returns the message after the call and whether anything changed.
        """
        async with translate_errors("upserting a message"), self.engine.begin() as conn:
            row, created = await self._lock_assistant(conn, upsert)
            items, calls, positions = await self._load_flow(conn, upsert.execution_id)
            incoming = self._stamp(upsert.items, items)
            changes = merge_flow(items, {k: v[2] for k, v in calls.items()}, positions, incoming)
            old_status = MessageStatus(row.status)
            status = merge_status(old_status, upsert.status)
            meta = merge_metadata(row.metadata or {}, upsert.metadata)
            changed = created or not changes.empty or status != old_status or meta != row.metadata
            items_after, calls_after = apply_changes(items, calls, changes)
            flow = assemble_flow(items_after, calls_after)
            if not changed:
                return _message(row, flow), False
            now = self.clock.tick()
            await self._write_flow(conn, upsert.execution_id, row.id, changes, now)
            content = assemble_content(items_after.values())
            cursor = await self._bump_cursor(conn, upsert.app_id)
            version = 1 if created else row.version + 1
            await conn.execute(
                messages.update()
                .where(messages.c.id == row.id)
                .values(
                    content=content,
                    status=int(status),
                    metadata=meta,
                    version=version,
                    cursor=cursor,
                    updated_us=now,
                )
            )
        message = replace(
            _message(row, flow),
            content=content,
            status=status,
            metadata=meta,
            version=version,
            cursor=cursor,
            updated_us=now,
        )
        return message, True

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
                _insert(conn, messages)
                .values(
                    id=_new_id(),
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
        if row.app_id != upsert.app_id:
            raise FailedPrecondition(
                f"execution {upsert.execution_id!r} belongs to another app", field="execution_id"
            )
        return row, created

    async def _load_flow(
        self, conn: AsyncConnection, execution_id: str
    ) -> tuple[dict[int, FlowItem], CallsBySeq, dict[int, int]]:
        item_rows = await conn.execute(
            sa.select(flow_items).where(flow_items.c.execution_id == execution_id)
        )
        items = {row.seq: _item(row) for row in item_rows}
        call_rows = await conn.execute(
            sa.select(tool_calls).where(tool_calls.c.execution_id == execution_id)
        )
        calls: CallsBySeq = {}
        positions: dict[int, int] = {}
        for row in call_rows:
            calls[row.call_id] = (row.seq, row.position, _call(row))
            positions[row.seq] = max(positions.get(row.seq, 0), row.position + 1)
        return items, calls, positions

    def _stamp(
        self, incoming: Sequence[FlowItem], stored: Mapping[int, FlowItem]
    ) -> list[FlowItem]:
        """Stamp items that arrive without a timestamp, after every stored stamp."""
        if all(item.timestamp_us is not None for item in incoming):
            return list(incoming)
        floor = max((i.timestamp_us or 0 for i in stored.values()), default=0)
        stamped = []
        for item in incoming:
            if item.timestamp_us is None and item.seq not in stored:
                item = replace(item, timestamp_us=self.clock.tick(floor))
            stamped.append(item)
        return stamped

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
                [_call_values(execution_id, s, p, c, now) for s, p, c in changes.new_calls],
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
        return [_message(r, flows.get(r.execution_id, ())) for r in rows]

    async def _load_flows(
        self, conn: AsyncConnection, execution_ids: Sequence[str]
    ) -> dict[str, tuple[FlowItem, ...]]:
        items: dict[str, dict[int, FlowItem]] = {e: {} for e in execution_ids}
        for row in await conn.execute(
            sa.select(flow_items).where(flow_items.c.execution_id.in_(execution_ids))
        ):
            items[row.execution_id][row.seq] = _item(row)
        calls: dict[str, CallsBySeq] = {e: {} for e in execution_ids}
        for row in await conn.execute(
            sa.select(tool_calls).where(tool_calls.c.execution_id.in_(execution_ids))
        ):
            calls[row.execution_id][row.call_id] = (row.seq, row.position, _call(row))
        return {e: assemble_flow(items[e], calls[e]) for e in execution_ids}


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Insert values as `Message` fields."""
    return {
        "id": values["id"],
        "app_id": values["app_id"],
        "role": Role(values["role"]),
        "execution_id": values["execution_id"],
        "request_id": values["request_id"],
        "content": values["content"],
        "status": MessageStatus(values["status"]),
        "metadata": values["metadata"],
        "version": values["version"],
        "created_us": values["created_us"],
        "updated_us": values["updated_us"],
    }
