"""The outbox of notices for chat: written with a deployment's end, delivered until acknowledged.

The transaction that ends a deployment also writes its notice here (`queue_notice`), so a
chat outage can delay a notice but never lose it. Deliverers claim due notices under a
short lease, so two deliverers do not send one notice at the same time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.common.db import translate_errors, upsert_insert
from appforge.services.common.pg_hot import HotPool
from appforge.services.deployer.domain import US, Notice, PendingNotice
from appforge.services.deployer.store import pg_steps
from appforge.services.deployer.store.rows import pending_notice_from_row, skip_locked
from appforge.services.deployer.tables import outbox


async def queue_notice(
    conn: AsyncConnection,
    engine: AsyncEngine,
    *,
    deployment_id: str,
    app_id: str,
    execution_id: str,
    notice: Notice,
    now_us: int,
) -> None:
    """Add a deployment's notice, inside the caller's transaction; once per deployment."""
    await conn.execute(
        upsert_insert(engine, outbox)
        .values(
            deployment_id=deployment_id,
            app_id=app_id,
            execution_id=execution_id,
            failed=notice.failed,
            metadata=notice.metadata,
            created_us=now_us,
            next_try_us=now_us,
        )
        .on_conflict_do_nothing(index_elements=["deployment_id"])
    )


class NoticeOutbox:
    """The deliverer's side of the outbox: claim due notices, record how delivery went."""

    def __init__(self, engine: AsyncEngine, hot: HotPool | None) -> None:
        self.engine = engine
        self.hot = hot  # PostgreSQL: the steps of `pg_steps`; None on SQLite

    async def claim_notices(
        self, now_us: int, lease: float, limit: int = 50
    ) -> list[PendingNotice]:
        """Due notices, each held for `lease` seconds so no other deliverer sends it too."""
        if self.hot is not None:  # picked and held in one statement
            async with translate_errors("reading the outbox"):
                rows = await self.hot.fetch(
                    pg_steps.CLAIM_NOTICES,
                    now_us=now_us,
                    held_until_us=now_us + int(lease * US),
                    limit=limit,
                )
            return [pending_notice_from_row(row, json.loads(row.metadata)) for row in rows]
        pick = skip_locked(
            self.engine,
            sa.select(outbox)
            .where(outbox.c.delivered_us.is_(None), outbox.c.next_try_us <= now_us)
            .order_by(outbox.c.next_try_us)
            .limit(limit),
        )
        async with translate_errors("reading the outbox"), self.engine.begin() as conn:
            rows = list((await conn.execute(pick)).all())
            if rows:
                await conn.execute(
                    outbox.update()
                    .where(outbox.c.deployment_id.in_([r.deployment_id for r in rows]))
                    .values(next_try_us=now_us + int(lease * US))
                )
        return [pending_notice_from_row(row) for row in rows]

    async def notices_delivered(self, deployment_ids: Sequence[str], now_us: int) -> None:
        """Chat took these notices: they are done (one statement for all of them)."""
        async with translate_errors("updating the outbox"):
            if self.hot is not None:
                await self.hot.fetch(
                    pg_steps.NOTICES_DELIVERED, deployment_ids=list(deployment_ids), now_us=now_us
                )
                return
            async with self.engine.begin() as conn:
                await conn.execute(
                    outbox.update()
                    .where(outbox.c.deployment_id.in_(deployment_ids))
                    .values(delivered_us=now_us, tries=outbox.c.tries + 1, last_error="")
                )

    async def notice_failed(self, deployment_id: str, error: str, next_try_us: int) -> None:
        """Chat did not take it: count the try and hold the notice until `next_try_us`."""
        values = {"of_deployment": deployment_id, "error": error[:4000], "retry_at_us": next_try_us}
        async with translate_errors("updating the outbox"):
            if self.hot is not None:
                await self.hot.fetch(pg_steps.NOTICE_FAILED, **values)
                return
            async with self.engine.begin() as conn:
                await conn.execute(pg_steps.NOTICE_FAILED.statement, values)
