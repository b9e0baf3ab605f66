"""Every query the deployer runs, by concept: deployments, attempts under leases, the outbox.

Deployments are rows, not coroutines: `DeploymentStore` queues, reads and cancels them,
`AttemptStore` is what workers claim them through, and `NoticeOutbox` holds their ends for
chat. Each answers with domain types only (`appforge.services.deployer.domain`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.deployer.store.attempts import AttemptStore
from appforge.services.deployer.store.deployments import DeploymentStore
from appforge.services.deployer.store.outbox import NoticeOutbox

__all__ = ["AttemptStore", "DeployerStores", "DeploymentStore", "NoticeOutbox"]


@dataclass(frozen=True, kw_only=True)
class DeployerStores:
    """The deployer's three stores over one engine."""

    deployments: DeploymentStore
    attempts: AttemptStore
    outbox: NoticeOutbox

    @classmethod
    def over(cls, engine: AsyncEngine, rng: random.Random | None = None) -> DeployerStores:
        """All three on `engine`; `rng` draws retry jitter (seeded in tests)."""
        return cls(
            deployments=DeploymentStore(engine),
            attempts=AttemptStore(engine, rng),
            outbox=NoticeOutbox(engine),
        )
