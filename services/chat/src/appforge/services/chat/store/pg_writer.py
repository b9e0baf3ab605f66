"""The PostgreSQL hot path of UpsertAssistantMessage: one round trip, for one write or many.

`chat_upsert_assistant_v2` (sql/chat_upsert_assistant_v2.sql, migration chat_0003) locks
or creates the execution's message, merges the items with the rules of `domain.py`, bumps
the app's change cursor and returns what changed, all in one statement, so no lock is ever
held across a round trip to this process and nothing on the way grows with the message.
Under load, writes that wait for a connection leave together through
`chat_upsert_assistant_batch_v1` (migration chat_0004): one round trip and one commit.
The portable path in `assistant.py` (used on SQLite) applies the same rules in Python;
tests/integration/test_store_agrees_with_domain.py keeps both in agreement with the domain.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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
from appforge.services.chat.metrics import WRITE_BATCHES, WRITE_BATCHES_RETRIED
from appforge.services.chat.store.rows import (
    StoredFlow,
    call_from_row,
    item_from_row,
    message_from_row,
    new_id,
    with_flow,
)
from appforge.services.common.batching import Outcome, WriteBatcher
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import translate_errors
from appforge.services.common.errors import (
    AppforgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from appforge.services.common.pg_hot import HotPool

UPSERT = "SELECT chat_upsert_assistant_v2($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7)::text"
UPSERT_BATCH = "SELECT chat_upsert_assistant_batch_v1($1::jsonb)::text"
# The largest batch of BASIC writes (see `WriteBatcher`): PostgreSQL holds a batch's locks
# until it commits, so it stays short. How many run at once is APPFORGE_WRITE_BATCHES.
BATCH_SIZE = 32
# Lost lock races: the batch was rolled back whole, its writes go again one by one.
_RETRY_ALONE = (
    asyncpg.exceptions.RaiseError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
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


@dataclass(frozen=True, slots=True)
class Write:
    """One write as `chat_upsert_assistant_v2` takes it."""

    message_id: str
    app_id: str
    execution_id: str
    items_json: str
    status: int | None
    metadata_json: str | None
    now: int

    def args(self) -> tuple[object, ...]:
        return (
            self.message_id,
            self.app_id,
            self.execution_id,
            self.items_json,
            self.status,
            self.metadata_json,
            self.now,
        )

    def batch_element(self) -> str:
        """The write as an element of `chat_upsert_assistant_batch_v1`'s array."""
        head = json.dumps([self.message_id, self.app_id, self.execution_id])
        status = "null" if self.status is None else str(self.status)
        return f"{head[:-1]},{self.items_json},{status},{self.metadata_json or 'null'},{self.now}]"


class PgAssistantWriter:
    """UpsertAssistantMessage on PostgreSQL through its own asyncpg pool.

    A plain asyncpg pool, not the engine's: checking a raw connection out through
    SQLAlchemy's async adapter costs more than the whole statement on this path. Its size
    is this path's share of the process's pool budget (see `chat.bootstrap`).

    BASIC writes go through a `WriteBatcher`: alone when a slot is free, else together in
    one `chat_upsert_assistant_batch_v1` call (one round trip, one commit). FULL writes
    read the flow in their own transaction and go alone.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        clock: HybridClock,
        *,
        pool_size: int,
        batches_in_flight: int = 2,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.clock = clock
        self.pool = HotPool(engine, pool_size)
        self._batcher: WriteBatcher[Write, UpsertResult] = WriteBatcher(
            self.run_batch,
            key=lambda write: write.execution_id,
            in_flight=max(1, min(batches_in_flight, pool_size)),
            max_size=batch_size,
        )

    async def close(self) -> None:
        """Finish the batches under way, close the pool (a later upsert opens a new one)."""
        await self._batcher.drain()
        await self.pool.close()

    def write(self, upsert: AssistantUpsert) -> Write:
        """The upsert as the function takes it, stamped now."""
        return Write(
            message_id=new_id(),
            app_id=upsert.app_id,
            execution_id=upsert.execution_id,
            items_json=json.dumps([_item_json(n, item) for n, item in enumerate(upsert.items)]),
            status=None if upsert.status is None else int(upsert.status),
            metadata_json=_metadata_json(upsert),
            now=self.clock.tick(),
        )

    async def upsert(self, upsert: AssistantUpsert, view: MessageView) -> UpsertResult:
        """Create or update the execution's message; FULL reads its whole flow after the
        write, in the same transaction (so it is the state this write left)."""
        write = self.write(upsert)
        if view is not MessageView.FULL:
            return await self._batcher.submit(write)
        async with translate_errors("upserting a message"):
            async with self.pool.connection() as conn, conn.transaction():
                with _domain_errors():
                    result = _decode(json.loads(await conn.fetchval(UPSERT, *write.args())))
                return await _with_flow(conn, result, upsert.execution_id)

    async def run_batch(self, writes: Sequence[Write]) -> list[Outcome[UpsertResult]]:
        """The writes in one transaction, in order within each execution; if one is
        refused (or the batch lost a lock race), nothing of the batch was written and each
        goes again alone, so every caller gets its own answer."""
        WRITE_BATCHES.observe(len(writes))
        async with translate_errors("upserting messages"):
            if len(writes) == 1:
                return [await _alone(self.pool, writes[0])]
            # Stable: an execution's writes keep their order; every batch takes app rows
            # in the same order, so two batches cannot deadlock on them.
            order = sorted(range(len(writes)), key=lambda n: writes[n].app_id)
            batch = "[" + ",".join(writes[n].batch_element() for n in order) + "]"
            try:
                async with self.pool.connection() as conn:
                    answers = json.loads(await conn.fetchval(UPSERT_BATCH, batch))
            except _RETRY_ALONE:
                WRITE_BATCHES_RETRIED.inc()
                return [await _alone(self.pool, write) for write in writes]
        answer_of = dict(zip(order, answers, strict=True))
        return [_decode(answer_of[n]) for n in range(len(writes))]


async def _alone(pool: HotPool, write: Write) -> Outcome[UpsertResult]:
    """One write in its own transaction: its result, or the error it is refused with."""
    try:
        with _domain_errors():
            async with pool.connection() as conn:
                return _decode(json.loads(await conn.fetchval(UPSERT, *write.args())))
    except AppforgeError as exc:
        return exc


@contextlib.contextmanager
def _domain_errors() -> Iterator[None]:
    """The function's refusals (SQLSTATE P0001, DETAIL = the kind, HINT = the field) as
    the domain's errors."""
    try:
        yield
    except asyncpg.exceptions.RaiseError as exc:
        kind = _ERRORS.get(getattr(exc, "detail", "") or "")
        if kind is None:
            raise
        raise kind(exc.args[0] if exc.args else str(exc), field=exc.hint) from exc


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
