"""Every query the builder runs.

The ordering state of an execution's flow lives in its row: `allocate` hands out the next
seqs and hybrid-clock stamps in one atomic UPDATE, so concurrent tool completions, and a
builder restarted on another machine, never reuse a seq or a stamp, and stamps increase
strictly even when the wall clock stalls or steps back (DESIGN.md, invariant 2). Nothing
sleeps to order anything.
"""

from __future__ import annotations

from enum import IntEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.builder.tables import executions
from appforge.services.common.db import is_postgres, translate_errors
from appforge.services.common.errors import NotFound


class ExecutionStatus(IntEnum):
    """Where an execution stands (matches appforge.builder.v1.ExecutionStatus)."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4
    TIMED_OUT = 5


class ExecutionStore:
    """Executions and the ordering state of their flows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        *,
        execution_id: str,
        app_id: str,
        model: str,
        prompt: str,
        user_message_id: str,
        owner: str,
        now_us: int,
    ) -> None:
        async with translate_errors("creating an execution"), self.engine.begin() as conn:
            await conn.execute(
                executions.insert().values(
                    id=execution_id,
                    app_id=app_id,
                    user_message_id=user_message_id,
                    status=int(ExecutionStatus.RUNNING),
                    model=model,
                    prompt=prompt,
                    owner=owner,
                    heartbeat_us=now_us,
                    created_us=now_us,
                    updated_us=now_us,
                )
            )

    async def allocate(self, execution_id: str, count: int, now_us: int) -> list[tuple[int, int]]:
        """The next `count` (seq, stamp) pairs of an execution's flow.

        seq continues from the last one handed out; the stamps are max(now, last + 1), then
        one microsecond apart: strictly increasing whatever the wall clock does.
        """
        if count < 1:
            raise ValueError(f"allocate at least one stamp, not {count}")
        greatest = sa.func.greatest if is_postgres(self.engine) else sa.func.max
        stmt = (
            executions.update()
            .where(executions.c.id == execution_id)
            .values(
                last_seq=executions.c.last_seq + count,
                last_stamp_us=greatest(now_us + count - 1, executions.c.last_stamp_us + count),
                updated_us=now_us,
            )
            .returning(executions.c.last_seq, executions.c.last_stamp_us)
        )
        async with translate_errors("allocating flow stamps"), self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFound(f"no execution {execution_id!r}", field="execution_id")
        last_seq, last_stamp = int(row.last_seq), int(row.last_stamp_us)
        return [(last_seq - count + 1 + n, last_stamp - count + 1 + n) for n in range(count)]
