"""The PostgreSQL hot path of UpsertAssistantMessage: one round trip.

`chat_upsert_assistant` (migration chat_0002) locks or creates the execution's message,
merges the items with the rules of `domain.py`, bumps the app's change cursor and returns
the message with its flow, all in one statement, so no lock is ever held across a round
trip to this process. The portable path in `assistant.py` (used on SQLite) applies the same
rules in Python; tests/integration/test_store_agrees_with_domain.py keeps both in agreement
with the domain.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.chat.domain import (
    AssistantUpsert,
    FlowItem,
    ItemKind,
    Message,
    assemble_flow,
)
from appforge.services.chat.store.rows import StoredFlow, message_from_row, new_id
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import translate_errors
from appforge.services.common.errors import (
    AppforgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

UPSERT = "SELECT chat_upsert_assistant($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7)::text"

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
    SQLAlchemy's async adapter costs more than the whole statement on this path.
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
                        self.dsn, min_size=1, max_size=self.pool_size, reset=None
                    )
        return self._pool

    async def close(self) -> None:
        """Close the pool (a later upsert opens a new one)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def upsert(self, upsert: AssistantUpsert) -> tuple[Message, bool]:
        """Create or update the execution's message; returns it and whether it changed."""
        args = (
            new_id(),
            upsert.app_id,
            upsert.execution_id,
            json.dumps([_item_json(n, item) for n, item in enumerate(upsert.items)]),
            None if upsert.status is None else int(upsert.status),
            json.dumps(upsert.metadata) if upsert.metadata else None,
            self.clock.tick(),
        )
        async with translate_errors("upserting a message"):
            pool = await self._acquire_pool()
            try:
                result = await pool.fetchval(UPSERT, *args)
            except asyncpg.exceptions.RaiseError as exc:
                kind = _ERRORS.get(getattr(exc, "detail", "") or "")
                if kind is None:
                    raise
                raise kind(exc.args[0] if exc.args else str(exc), field=exc.hint) from exc
        return _decode(json.loads(result))


def _item_json(index: int, item: FlowItem) -> dict[str, Any]:
    out: dict[str, Any] = {
        "i": index,
        "seq": item.seq,
        "kind": int(item.kind),
        "ts": item.timestamp_us,
    }
    if item.kind is ItemKind.MESSAGE:
        out["text"] = item.text
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


def _decode(result: dict[str, Any]) -> tuple[Message, bool]:
    stored = StoredFlow()
    for values in result["items"]:
        stored.add_item(dict(zip(_ITEM_COLUMNS, values, strict=True)))
    for values in result["calls"]:
        stored.add_call(dict(zip(_CALL_COLUMNS, values, strict=True)))
    flow = assemble_flow(stored.items, stored.calls)
    return message_from_row(result["message"], flow), bool(result["changed"])
