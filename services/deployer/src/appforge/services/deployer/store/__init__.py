"""Every query the deployer runs, by concept: deployments, attempts under leases, the outbox.

Deployments are rows, not coroutines: `DeploymentStore` queues, reads and cancels them,
`AttemptStore` is what workers claim them through, and `NoticeOutbox` holds their ends for
chat. Each answers with domain types only (`appforge.services.deployer.domain`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.common.db import is_postgres
from appforge.services.common.pg_hot import HotPool
from appforge.services.deployer.store.attempts import AttemptStore
from appforge.services.deployer.store.deployments import DeploymentStore
from appforge.services.deployer.store.outbox import NoticeOutbox

__all__ = ["AttemptStore", "DeployerStores", "DeploymentStore", "NoticeOutbox"]


@dataclass(frozen=True, kw_only=True)
class DeployerStores:
    """The deployer's three stores over one engine (and, on PostgreSQL, one hot pool)."""

    deployments: DeploymentStore
    attempts: AttemptStore
    outbox: NoticeOutbox
    hot: HotPool | None

    @classmethod
    def over(
        cls,
        engine: AsyncEngine,
        rng: random.Random | None = None,
        *,
        hot_pool_size: int | None = None,
    ) -> DeployerStores:
        """All three on `engine`; `rng` draws retry jitter (seeded in tests). On PostgreSQL
        the queue's steps run on a pool of their own, `hot_pool_size` connections (default:
        as many as the engine's pool)."""
        hot = None
        if is_postgres(engine):
            hot = HotPool(engine, hot_pool_size or engine.pool.size())  # type: ignore[attr-defined]
        return cls(
            deployments=DeploymentStore(engine, hot),
            attempts=AttemptStore(engine, hot, rng),
            outbox=NoticeOutbox(engine, hot),
            hot=hot,
        )

    async def close(self) -> None:
        """Close the hot pool (the engine is its owner's to dispose of)."""
        if self.hot is not None:
            await self.hot.close()
