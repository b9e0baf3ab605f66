"""Tool calls: recorded PENDING, moved forward only, and timed out past their deadline.

The WHERE clauses are the precedence rule (pending → streaming → one terminal state, the
first terminal state wins): a call's status only moves forward, and of two writers
finishing one call (its runner and a sweeper) exactly one succeeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.builder.domain import (
    TIMED_OUT_ERROR,
    ExecutionStatus,
    RecordedCall,
    deadline_reason,
)
from appforge.services.builder.store.executions import end_execution
from appforge.services.builder.store.rows import (
    MAX_ERROR_CHARS,
    OPEN_CALL_STATUSES,
    call_from_row,
)
from appforge.services.builder.tables import executions, tool_calls
from appforge.services.common.db import is_postgres, translate_errors, upsert_insert
from appforge.services.common.flow import ToolStatus


class CallQueries:
    """An execution's tool calls, and the sweep of those past their deadline."""

    engine: AsyncEngine
    statements: AsyncEngine  # the same pool, for single statements (no BEGIN/COMMIT)

    async def add_calls(
        self,
        execution_id: str,
        seq: int,
        calls: Sequence[tuple[str, str, str]],
        *,
        stamp_us: int,
        deadline_us: int,
        now_us: int,
    ) -> None:
        """Record a batch's calls (call_id, name, arguments_json) as PENDING; replays are no-ops."""
        rows = [
            {
                "execution_id": execution_id,
                "call_id": call_id,
                "seq": seq,
                "position": position,
                "name": name,
                "status": int(ToolStatus.PENDING),
                "arguments_json": arguments,
                "deadline_us": deadline_us,
                "stamp_us": stamp_us,
                "updated_us": now_us,
            }
            for position, (call_id, name, arguments) in enumerate(calls)
        ]
        async with translate_errors("recording tool calls"), self.engine.begin() as conn:
            await conn.execute(
                upsert_insert(self.engine, tool_calls).on_conflict_do_nothing(
                    index_elements=["execution_id", "call_id"]
                ),
                rows,
            )

    async def start_call(self, execution_id: str, call_id: str, now_us: int) -> bool:
        """PENDING → STREAMING; False if the call had moved on already."""
        return await self._move(
            execution_id,
            call_id,
            (int(ToolStatus.PENDING),),
            {"status": int(ToolStatus.STREAMING)},
            now_us,
        )

    async def finish_call(
        self,
        execution_id: str,
        call_id: str,
        status: ToolStatus,
        *,
        result_json: str = "",
        error: str = "",
        now_us: int,
    ) -> bool:
        """Move an open call to a terminal state; False if another writer finished it first."""
        if not status.terminal:
            raise ValueError(f"{status.name} is not a terminal status")
        values = {
            "status": int(status),
            "result_json": result_json,
            "error": error[:MAX_ERROR_CHARS],
        }
        return await self._move(execution_id, call_id, OPEN_CALL_STATUSES, values, now_us)

    async def _move(
        self,
        execution_id: str,
        call_id: str,
        from_statuses: Sequence[int],
        values: dict[str, Any],
        now_us: int,
    ) -> bool:
        stmt = (
            tool_calls.update()
            .where(
                tool_calls.c.execution_id == execution_id,
                tool_calls.c.call_id == call_id,
                tool_calls.c.status.in_(from_statuses),
            )
            .values(updated_us=now_us, **values)
            .returning(tool_calls.c.call_id)
        )
        async with translate_errors("updating a tool call"), self.statements.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def calls(self, execution_id: str) -> list[RecordedCall]:
        """Every call of an execution, in flow order."""
        async with translate_errors("reading tool calls"), self.statements.connect() as conn:
            rows = await conn.execute(
                sa.select(tool_calls)
                .where(tool_calls.c.execution_id == execution_id)
                .order_by(tool_calls.c.seq, tool_calls.c.position)
            )
            return [call_from_row(r) for r in rows]

    async def time_out_expired_calls(self, now_us: int, limit: int = 100) -> list[RecordedCall]:
        """Move open calls past their deadline to TIMED_OUT and end their executions as
        TIMED_OUT (their other open calls CANCELLED); the calls this sweep timed out.

        Safe with any number of sweepers: each execution is locked first (SKIP LOCKED on
        PostgreSQL, so a busy one waits for the next sweep), in the same order `finish`
        takes its locks, and calls only move while still open.
        """
        expired = (
            sa.select(tool_calls.c.execution_id)
            .where(
                tool_calls.c.status.in_(OPEN_CALL_STATUSES),
                tool_calls.c.deadline_us < now_us,
            )
            .order_by(tool_calls.c.deadline_us)
            .limit(limit)
        )
        async with translate_errors("sweeping tool calls"), self.engine.connect() as conn:
            execution_ids = list(dict.fromkeys(r.execution_id for r in await conn.execute(expired)))
        moved: list[RecordedCall] = []
        for execution_id in execution_ids:
            moved.extend(await self._time_out_calls_of(execution_id, now_us))
        return moved

    async def _time_out_calls_of(self, execution_id: str, now_us: int) -> list[RecordedCall]:
        lock = sa.select(executions.c.id).where(executions.c.id == execution_id)
        if is_postgres(self.engine):
            lock = lock.with_for_update(skip_locked=True)
        async with translate_errors("sweeping tool calls"), self.engine.begin() as conn:
            if await conn.scalar(lock) is None:
                return []
            rows = list(
                await conn.execute(
                    tool_calls.update()
                    .where(
                        tool_calls.c.execution_id == execution_id,
                        tool_calls.c.status.in_(OPEN_CALL_STATUSES),
                        tool_calls.c.deadline_us < now_us,
                    )
                    .values(
                        status=int(ToolStatus.TIMED_OUT), error=TIMED_OUT_ERROR, updated_us=now_us
                    )
                    .returning(*tool_calls.c)
                )
            )
            calls = sorted((call_from_row(r) for r in rows), key=lambda c: (c.seq, c.position))
            if calls:
                reason = deadline_reason(calls[0].call_id, calls[0].name)
                timed_out = ExecutionStatus.TIMED_OUT
                await end_execution(conn, execution_id, timed_out, reason, now_us, now_us)
            return calls
