"""The workers' side: claiming due deployments under a lease, heartbeats, and attempts' ends.

Workers claim due deployments with `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL. A
worker holds a lease while its attempt runs and extends it by heartbeat; a deployment
whose lease expired is taken over by whichever worker sees it first, and the lost attempt
is recorded. A worker that lost its lease can record nothing more.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.common.db import translate_errors
from appforge.services.deployer.domain import (
    US,
    AttemptOutcome,
    AttemptRecorded,
    Claim,
    ClaimResult,
    DeploymentStatus,
    FinishResult,
    LeaseLost,
    LeaseState,
    NextStep,
    NothingDue,
    Recovered,
    after_failure,
    attempt_deadline_us,
)
from appforge.services.deployer.store.rows import (
    WAITING,
    deployment_from_row,
    for_update,
    policy_from_row,
    skip_locked,
)
from appforge.services.deployer.store.transitions import end_attempt, move_on
from appforge.services.deployer.tables import attempts, deployments, files
from appforge.services.deployer.targets.base import ArtifactFile


class AttemptStore:
    """Claims, leases and attempts: everything a deployment worker reads and writes.

    `rng` draws the jitter of retry delays (seeded in tests).
    """

    def __init__(self, engine: AsyncEngine, rng: random.Random | None = None) -> None:
        self.engine = engine
        self.rng = rng or random.Random()

    async def claim(self, worker_id: str, lease: float, now_us: int) -> ClaimResult:
        """Take the next due deployment: a Claim to attempt it now, Recovered when a
        crashed worker's deployment was taken over instead (look again), NothingDue."""
        # Two queries, each served by its own partial index (an OR of both would sort the
        # whole backlog): crashed workers' deployments first, then the head of the queue.
        expired = skip_locked(
            self.engine,
            sa.select(deployments)
            .where(
                deployments.c.status == int(DeploymentStatus.RUNNING),
                deployments.c.lease_expires_us < now_us,
            )
            .order_by(deployments.c.lease_expires_us)
            .limit(1),
        )
        waiting = skip_locked(
            self.engine,
            sa.select(deployments)
            .where(deployments.c.status.in_(WAITING), deployments.c.next_attempt_us <= now_us)
            .order_by(deployments.c.next_attempt_us)
            .limit(1),
        )
        async with translate_errors("claiming a deployment"), self.engine.begin() as conn:
            row = (await conn.execute(expired)).first() or (await conn.execute(waiting)).first()
            if row is None:
                return NothingDue()
            if row.status == DeploymentStatus.RUNNING:
                return await self._recover_lost(conn, row, now_us)
            number = row.attempts_made + 1
            await conn.execute(
                deployments.update()
                .where(deployments.c.id == row.id)
                .values(
                    status=int(DeploymentStatus.RUNNING),
                    attempts_made=number,
                    lease_owner=worker_id,
                    lease_expires_us=now_us + int(lease * US),
                    updated_us=now_us,
                )
            )
            await conn.execute(
                attempts.insert().values(
                    deployment_id=row.id,
                    number=number,
                    worker_id=worker_id,
                    started_us=now_us,
                    outcome=int(AttemptOutcome.RUNNING),
                )
            )
        # The row as just written (its attempts are not loaded: a worker does not need them).
        deployment = replace(
            deployment_from_row(row),
            status=DeploymentStatus.RUNNING,
            attempts_made=number,
            lease_owner=worker_id,
            updated_us=now_us,
        )
        deadline = attempt_deadline_us(
            started_us=now_us, policy=deployment.policy, created_us=deployment.created_us
        )
        return Claim(deployment=deployment, attempt=number, deadline_us=deadline)

    async def _recover_lost(self, conn: AsyncConnection, row: Any, now_us: int) -> Recovered:
        error = f"worker {row.lease_owner} stopped heartbeating"
        await end_attempt(
            conn,
            deployment_id=row.id,
            number=row.attempts_made,
            outcome=AttemptOutcome.LOST,
            error=error,
            now_us=now_us,
        )
        step = after_failure(
            outcome=AttemptOutcome.LOST,
            error=error,
            attempts_made=row.attempts_made,
            policy=policy_from_row(row),
            created_us=row.created_us,
            now_us=now_us,
            rng=self.rng,
        )
        await move_on(conn, self.engine, row, step, now_us)
        return Recovered(
            deployment_id=row.id,
            lost_attempt=row.attempts_made,
            lost_worker=row.lease_owner or "",
            status=step.status,
        )

    async def heartbeat(
        self, deployment_id: str, worker_id: str, lease: float, now_us: int
    ) -> LeaseState:
        """Extend the lease by `lease` seconds from now, if this worker still holds it."""
        async with translate_errors("extending a lease"), self.engine.begin() as conn:
            row = (
                await conn.execute(
                    deployments.update()
                    .where(
                        deployments.c.id == deployment_id,
                        deployments.c.lease_owner == worker_id,
                        deployments.c.status == int(DeploymentStatus.RUNNING),
                    )
                    .values(lease_expires_us=now_us + int(lease * US))
                    .returning(deployments.c.cancel_requested)
                )
            ).first()
        if row is None:
            return LeaseState.LOST
        return LeaseState.CANCEL_REQUESTED if row.cancel_requested else LeaseState.HELD

    async def artifact(self, deployment_id: str) -> list[ArtifactFile]:
        """The files a deployment publishes, by path."""
        async with translate_errors("reading an artifact"), self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(files)
                .where(files.c.deployment_id == deployment_id)
                .order_by(files.c.path)
            )
            return [
                ArtifactFile(path=r.path, content=bytes(r.content), content_type=r.content_type)
                for r in rows
            ]

    async def finish_attempt(
        self,
        claim: Claim,
        worker_id: str,
        *,
        outcome: AttemptOutcome,
        error: str,
        url: str,
        now_us: int,
    ) -> FinishResult:
        """Record how an attempt ended and move its deployment on, if the lease is still ours."""
        deployment_id = claim.deployment.id
        async with translate_errors("finishing an attempt"), self.engine.begin() as conn:
            owned = for_update(
                self.engine,
                sa.select(deployments).where(
                    deployments.c.id == deployment_id,
                    deployments.c.lease_owner == worker_id,
                    deployments.c.status == int(DeploymentStatus.RUNNING),
                ),
            )
            row = (await conn.execute(owned)).first()
            if row is None:
                return LeaseLost(deployment_id=deployment_id)
            await end_attempt(
                conn,
                deployment_id=deployment_id,
                number=claim.attempt,
                outcome=outcome,
                error=error,
                now_us=now_us,
            )
            if outcome is AttemptOutcome.SUCCEEDED:
                step = NextStep(status=DeploymentStatus.SUCCEEDED)
            else:
                url = ""
                step = after_failure(
                    outcome=outcome,
                    error=error,
                    attempts_made=row.attempts_made,
                    policy=claim.deployment.policy,
                    created_us=row.created_us,
                    now_us=now_us,
                    rng=self.rng,
                )
            await move_on(conn, self.engine, row, step, now_us, url)
        return AttemptRecorded(status=step.status)
