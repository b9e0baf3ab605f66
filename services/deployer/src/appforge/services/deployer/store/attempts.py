"""The workers' side: claiming due deployments under a lease, heartbeats, and attempts' ends.

Workers claim due deployments with `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL. A
worker holds a lease while its attempt runs and extends it by heartbeat; a deployment
whose lease expired is taken over by whichever worker sees it first, and the lost attempt
is recorded. A worker that lost its lease can record nothing more.

On PostgreSQL the steps of a deployment that goes well are one statement each, compiled
once and run on the deployer's own asyncpg pool in autocommit (`pg_steps`: one round trip
each): the claim (pick, lease, attempt row and the read of its files together), each
heartbeat, and the success (the attempt ended, the deployment released as SUCCEEDED and its
notice queued, only if the lease is still ours). Crashed workers' leases are looked for at
most every half lease, or when nothing waits. SQLite takes the transactions these replace.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.common.db import translate_errors
from appforge.services.common.pg_hot import HotPool
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
    PendingNotice,
    Recovered,
    after_failure,
    attempt_deadline_us,
    final_notice,
)
from appforge.services.deployer.store import pg_steps
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

    def __init__(
        self, engine: AsyncEngine, hot: HotPool | None, rng: random.Random | None = None
    ) -> None:
        self.engine = engine
        self.hot = hot  # PostgreSQL: the steps of `pg_steps`; None on SQLite
        self.rng = rng or random.Random()
        self._expired_checked_us: int | None = None  # when lost leases were last looked for

    async def claim(self, worker_id: str, lease: float, now_us: int) -> ClaimResult:
        """Take the next due deployment: a Claim to attempt it now, Recovered when a
        crashed worker's deployment was taken over instead (look again), NothingDue."""
        if self.hot is None:
            return await self._claim_in_transaction(worker_id, lease, now_us)
        looked = self._recovery_due(now_us, lease)
        if looked:
            self._expired_checked_us = now_us
            recovered = await self._recover_one_expired(now_us)
            if recovered is not None:
                return recovered
        claimed = await self._claim_waiting(self.hot, worker_id, lease, now_us)
        if claimed is not None:
            return claimed
        if not looked:  # nothing waits: a lost lease may, sooner than the period
            self._expired_checked_us = now_us
            recovered = await self._recover_one_expired(now_us)
            if recovered is not None:
                return recovered
        return NothingDue()

    def _recovery_due(self, now_us: int, lease: float) -> bool:
        """Whether lost leases are to be looked for now (every half lease at most)."""
        checked = self._expired_checked_us
        return checked is None or now_us - checked >= int(lease * US / 2)

    async def succeed_and_claim(
        self,
        claim: Claim,
        worker_id: str,
        *,
        url: str,
        lease: float,
        now_us: int,
        hold_notice: float = 0.0,
    ) -> tuple[FinishResult, Claim | None]:
        """Record a success and claim the next due deployment, in one statement where it
        can be (PostgreSQL, and no look for lost leases due): how the success was recorded,
        and the next Claim (None: nothing was claimed, claim as usual). `hold_notice`: as
        for `finish_attempt`."""
        if self.hot is None or self._recovery_due(now_us, lease):
            alone = await self.finish_attempt(
                claim,
                worker_id,
                outcome=AttemptOutcome.SUCCEEDED,
                error="",
                url=url,
                now_us=now_us,
                hold_notice=hold_notice,
            )
            return alone, None
        success = _Success.of(claim, worker_id, url=url, now_us=now_us, hold_notice=hold_notice)
        async with translate_errors("finishing an attempt"):
            row = await self.hot.fetchrow(
                pg_steps.SUCCEED_AND_CLAIM,
                **success.values,
                lease_until_us=now_us + int(lease * US),
            )
        assert row is not None  # one row, always
        finished = success.recorded(row.finished_id is not None)
        return finished, None if row.id is None else _claim_from_row(row, now_us)

    async def _claim_waiting(
        self, hot: HotPool, worker_id: str, lease: float, now_us: int
    ) -> Claim | None:
        """The head of the queue leased and its attempt row written, in one statement."""
        async with translate_errors("claiming a deployment"):
            row = await hot.fetchrow(
                pg_steps.CLAIM,
                worker_id=worker_id,
                now_us=now_us,
                lease_until_us=now_us + int(lease * US),
            )
        return None if row is None else _claim_from_row(row, now_us)

    async def _recover_one_expired(self, now_us: int) -> Recovered | None:
        """A crashed worker's deployment, its lost attempt recorded and the deployment moved
        on (a retry, or its end); None when no lease has expired."""
        if self.hot is not None:  # the usual answer, none, in one cheap statement
            async with translate_errors("claiming a deployment"):
                if await self.hot.fetchrow(pg_steps.LEASE_EXPIRED, now_us=now_us) is None:
                    return None
        expired = (
            sa.select(deployments)
            .where(
                deployments.c.status == int(DeploymentStatus.RUNNING),
                deployments.c.lease_expires_us < now_us,
            )
            .order_by(deployments.c.lease_expires_us)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        async with translate_errors("claiming a deployment"), self.engine.begin() as conn:
            row = (await conn.execute(expired)).first()
            if row is None:
                return None
            return await self._recover_lost(conn, row, now_us)

    async def _claim_in_transaction(self, worker_id: str, lease: float, now_us: int) -> ClaimResult:
        """`claim` as statements in one transaction (SQLite: every transaction exclusive)."""
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
            artifact = await conn.execute(
                sa.select(files).where(files.c.deployment_id == row.id).order_by(files.c.path)
            )
            artifact_files = tuple(
                ArtifactFile(path=f.path, content=bytes(f.content), content_type=f.content_type)
                for f in artifact
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
        return Claim(
            deployment=deployment, attempt=number, deadline_us=deadline, files=artifact_files
        )

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
        values = {
            "deployment_id": deployment_id,
            "worker_id": worker_id,
            "lease_until_us": now_us + int(lease * US),
        }
        async with translate_errors("extending a lease"):
            if self.hot is not None:
                row: Any = await self.hot.fetchrow(pg_steps.HEARTBEAT, **values)
            else:
                async with self.engine.begin() as conn:
                    row = (await conn.execute(pg_steps.HEARTBEAT.statement, values)).first()
        if row is None:
            return LeaseState.LOST
        return LeaseState.CANCEL_REQUESTED if row.cancel_requested else LeaseState.HELD

    async def finish_attempt(
        self,
        claim: Claim,
        worker_id: str,
        *,
        outcome: AttemptOutcome,
        error: str,
        url: str,
        now_us: int,
        hold_notice: float = 0.0,
    ) -> FinishResult:
        """Record how an attempt ended and move its deployment on, if the lease is still ours.

        `hold_notice` > 0: the caller delivers the notice of a success itself, so on
        PostgreSQL it is queued held for that many seconds (no other deliverer sends it
        meanwhile; after that, any does) and returned in `AttemptRecorded.notice`."""
        if self.hot is not None and outcome is AttemptOutcome.SUCCEEDED:
            success = _Success.of(claim, worker_id, url=url, now_us=now_us, hold_notice=hold_notice)
            return await self._succeed(self.hot, success)
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

    async def _succeed(self, hot: HotPool, success: _Success) -> FinishResult:
        """A success recorded in one statement: under the lock of the deployment, if this
        worker still holds its lease, the attempt ended, the deployment SUCCEEDED with its
        URL and its notice queued; LeaseLost (and nothing written) otherwise."""
        async with translate_errors("finishing an attempt"):
            row = await hot.fetchrow(pg_steps.SUCCEED, **success.values)
        return success.recorded(row is not None)


@dataclass(frozen=True)
class _Success:
    """A success as `pg_steps.SUCCEED` (and SUCCEED_AND_CLAIM) write it, with its notice."""

    deployment_id: str
    values: dict[str, Any]
    notice: PendingNotice | None  # held for the caller to deliver

    @classmethod
    def of(
        cls, claim: Claim, worker_id: str, *, url: str, now_us: int, hold_notice: float
    ) -> _Success:
        deployment = claim.deployment
        notice = final_notice(
            status=DeploymentStatus.SUCCEEDED,
            deployment_id=deployment.id,
            attempts=claim.attempt,
            url=url,
        )
        values = {
            "deployment_id": deployment.id,
            "worker_id": worker_id,
            "number": claim.attempt,
            "now_us": now_us,
            "url": url,
            "app_id": deployment.app_id,
            "execution_id": deployment.execution_id,
            "metadata": json.dumps(notice.metadata),
            "notice_due_us": now_us + int(hold_notice * US),
        }
        held = (
            PendingNotice(
                deployment_id=deployment.id,
                app_id=deployment.app_id,
                execution_id=deployment.execution_id,
                notice=notice,
                tries=0,
            )
            if hold_notice > 0
            else None
        )
        return cls(deployment.id, values, held)

    def recorded(self, owned: bool) -> FinishResult:
        """The result, given whether the lease was still ours (and so anything written)."""
        if not owned:
            return LeaseLost(deployment_id=self.deployment_id)
        return AttemptRecorded(status=DeploymentStatus.SUCCEEDED, notice=self.notice)


def _claim_from_row(row: Any, now_us: int) -> Claim:
    """A claimed deployment's row (its files as arrays, by path) as the Claim, its attempt
    started at `now_us`."""
    deployment = deployment_from_row(row)
    deadline = attempt_deadline_us(
        started_us=now_us, policy=deployment.policy, created_us=deployment.created_us
    )
    artifact = tuple(
        ArtifactFile(path=path, content=content, content_type=content_type)
        for path, content, content_type in zip(
            row.paths or (), row.contents or (), row.content_types or (), strict=True
        )
    )
    return Claim(
        deployment=deployment, attempt=row.attempts_made, deadline_us=deadline, files=artifact
    )
