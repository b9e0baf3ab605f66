"""The PostgreSQL hot path of UpsertAssistantMessage: one round trip.

`chat_upsert_assistant_v2` (sql/chat_upsert_assistant_v2.sql, migration chat_0003) locks
or creates the execution's message, merges the items with the rules of `domain.py`, bumps
the app's change cursor and returns what changed, all in one statement, so no lock is ever
held across a round trip to this process and nothing on the way grows with the message.
The portable path in `assistant.py` (used on SQLite) applies the same rules in Python;
tests/integration/test_store_agrees_with_domain.py keeps both in agreement with the domain.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.chat.domain import (
    AssistantUpsert,
    FlowChanges,
    FlowItem,
    ItemKind,
    MessageStatus,
    MessageView,
    UpsertPlan,
    UpsertResult,
    assemble_flow,
)
from appforge.services.chat.store.rows import (
    StoredFlow,
    call_from_row,
    item_from_row,
    message_from_row,
    new_id,
    with_flow,
)
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import translate_errors
from appforge.services.common.errors import (
    AppforgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

UPSERT = "SELECT chat_upsert_assistant_v2($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7)::text"
FLOW_ITEMS = "SELECT seq, kind, text, timestamp_us FROM chat_flow_items WHERE execution_id = $1"
TOOL_CALLS = (
    "SELECT call_id, seq, position, name, status, arguments_json, result_json, error,"
    " deadline_us FROM chat_tool_calls WHERE execution_id = $1"
)

_ERRORS: dict[str, type[AppforgeError]] = {
    "not_found": NotFound,
    "failed_precondition": FailedPrecondition,
    "invalid_argument": InvalidArgument,
}
_ITEM_COLUMNS = ("seq", "kind", "text", "timestamp_us")
_CALL_COLUMNS = (
    "call_id",
    "seq",
    "position",
    "name",
    "status",
    "arguments_json",
    "result_json",
    "error",
    "deadline_us",
)


class PgAssistantWriter:
    """UpsertAssistantMessage on PostgreSQL through its own asyncpg pool.

    A plain asyncpg pool, not the engine's: checking a raw connection out through
    SQLAlchemy's async adapter costs more than the whole statement on this path. Its size
    is this path's share of the process's pool budget (see `chat.bootstrap`).
    """

    def __init__(self, engine: AsyncEngine, clock: HybridClock, *, pool_size: int) -> None:
        self.dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.clock = clock
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def _acquire_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=self.pool_size, reset=_keep_session
                    )
        return self._pool

    async def close(self) -> None:
        """Close the pool (a later upsert opens a new one)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def upsert(self, upsert: AssistantUpsert, view: MessageView) -> UpsertResult:
        """Create or update the execution's message; FULL reads its whole flow after the
        write, in the same transaction (so it is the state this write left)."""
        args = (
            new_id(),
            upsert.app_id,
            upsert.execution_id,
            json.dumps([_item_json(n, item) for n, item in enumerate(upsert.items)]),
            None if upsert.status is None else int(upsert.status),
            _metadata_json(upsert),
            self.clock.tick(),
        )
        async with translate_errors("upserting a message"):
            pool = await self._acquire_pool()
            try:
                if view is MessageView.FULL:
                    async with pool.acquire() as conn, conn.transaction():
                        result = _decode(json.loads(await conn.fetchval(UPSERT, *args)))
                        return await _with_flow(conn, result, upsert.execution_id)
                return _decode(json.loads(await pool.fetchval(UPSERT, *args)))
            except asyncpg.exceptions.RaiseError as exc:
                kind = _ERRORS.get(getattr(exc, "detail", "") or "")
                if kind is None:
                    raise
                raise kind(exc.args[0] if exc.args else str(exc), field=exc.hint) from exc


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset (`RESET ALL`, `UNLISTEN *`, …): this
    path sets no session state, and the reset would add a round trip and server work to
    every call (`reset=None` means "the default reset", not "none")."""


def _metadata_json(upsert: AssistantUpsert) -> str | None:
    """The metadata as JSON: as validation encoded it, else (a caller that skipped it)
    encoded here."""
    if upsert.metadata_json is not None or not upsert.metadata:
        return upsert.metadata_json
    return json.dumps(upsert.metadata, separators=(",", ":"), allow_nan=False)


def _item_json(index: int, item: FlowItem) -> dict[str, Any]:
    out: dict[str, Any] = {
        "i": index,
        "seq": item.seq,
        "kind": int(item.kind),
        "ts": item.timestamp_us,
    }
    if item.kind is ItemKind.MESSAGE:
        out["text"] = item.text
        out["offset"] = item.text_offset
    else:
        out["calls"] = [
            {
                "id": c.call_id,
                "name": c.name,
                "status": int(c.status),
                "args": c.arguments_json,
                "result": c.result_json,
                "error": c.error,
                "deadline": c.deadline_us,
            }
            for c in item.calls
        ]
    return out


def _call_row(values: list[Any]) -> Mapping[str, Any]:
    return dict(zip(_CALL_COLUMNS, values, strict=True))


def _decode(result: dict[str, Any]) -> UpsertResult:
    """The function's answer as the store's result, the delta built by the domain."""
    message = message_from_row(result["message"])
    if not result["changed"]:
        return UpsertResult(message=message, delta=None)
    changes = FlowChanges(
        new_items=tuple(
            item_from_row(dict(zip(_ITEM_COLUMNS, v, strict=True))) for v in result["new_items"]
        ),
        appended=tuple(
            FlowItem(seq=seq, kind=ItemKind.MESSAGE, text=text, text_offset=offset)
            for seq, offset, text in result["appended"]
        ),
        new_calls=tuple(
            (row["seq"], row["position"], call_from_row(row))
            for row in map(_call_row, result["new_calls"])
        ),
        updated_calls=tuple(
            (row["seq"], call_from_row(row)) for row in map(_call_row, result["updated_calls"])
        ),
    )
    plan = UpsertPlan(
        created=bool(result["created"]),
        changes=changes,
        status=MessageStatus(message.status),
        status_changed=bool(result["status_changed"]),
        metadata=dict(message.metadata),
        metadata_changes=result["metadata_changes"],
    )
    delta = plan.delta(
        message_id=message.id,
        execution_id=message.execution_id or "",
        version=message.version,
        updated_us=message.updated_us,
    )
    return UpsertResult(message=message, delta=delta, created=plan.created)


async def _with_flow(
    conn: asyncpg.Connection, result: UpsertResult, execution_id: str
) -> UpsertResult:
    stored = StoredFlow()
    for record in await conn.fetch(FLOW_ITEMS, execution_id):
        stored.add_item(record)
    for record in await conn.fetch(TOOL_CALLS, execution_id):
        stored.add_call(record)
    flow = assemble_flow(stored.items, stored.calls)
    return UpsertResult(
        message=with_flow(result.message, flow), delta=result.delta, created=result.created
    )
