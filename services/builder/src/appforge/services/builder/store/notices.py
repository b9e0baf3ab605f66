"""The final-notice outbox: ended executions whose end chat has not acknowledged."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.builder.domain import ExecutionStatus
from appforge.services.builder.tables import executions
from appforge.services.common.db import is_postgres, translate_errors


class NoticeQueries:
    """Claiming due final notices, and recording chat's acknowledgement."""

    engine: AsyncEngine

    async def claim_notices(
        self, now_us: int, *, retry_after_us: int, limit: int = 50
    ) -> list[str]:
        """Ids of ended executions whose final notice is due and unacknowledged, claimed
        for `retry_after_us` so that one replica delivers each at a time."""
        pick = (
            sa.select(executions.c.id)
            .where(
                executions.c.notified_us.is_(None),
                executions.c.status != int(ExecutionStatus.RUNNING),
                executions.c.notice_due_us <= now_us,
            )
            .order_by(executions.c.notice_due_us)
            .limit(limit)
        )
        if is_postgres(self.engine):
            pick = pick.with_for_update(skip_locked=True)
        async with translate_errors("claiming final notices"), self.engine.begin() as conn:
            ids = [row.id for row in await conn.execute(pick)]
            if ids:
                await conn.execute(
                    executions.update()
                    .where(executions.c.id.in_(ids))
                    .values(notice_due_us=now_us + retry_after_us)
                )
        return ids

    async def mark_notified(self, execution_id: str, now_us: int) -> None:
        """Chat acknowledged the execution's final notice."""
        async with translate_errors("recording a delivered notice"), self.engine.begin() as conn:
            await conn.execute(
                executions.update()
                .where(executions.c.id == execution_id)
                .values(notified_us=now_us)
            )
