"""Every query the deployer runs: deployments are rows, claimed under a lease.

Workers claim due deployments with `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL (on
SQLite every transaction is BEGIN IMMEDIATE, so a plain SELECT is already exclusive). A
worker holds a lease while its attempt runs and extends it by heartbeat; a deployment
whose lease expired is taken over by whichever worker sees it first, and the lost
attempt is recorded. The transaction that ends a deployment also writes its notice to
the outbox, so the notice can be delayed by a chat outage but never lost.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.common.db import is_postgres, translate_errors, upsert_insert
from appforge.services.common.errors import FailedPrecondition, NotFound
from appforge.services.deployer.domain import (
    US,
    Attempt,
    AttemptOutcome,
    Claim,
    Deployment,
    DeploymentStatus,
    DeployRequest,
    Policy,
    after_failure,
    attempt_deadline_us,
    final_notice,
)
from appforge.services.deployer.tables import attempts, deployments, files, outbox
from appforge.services.deployer.targets.base import ArtifactFile

_WAITING = (int(DeploymentStatus.QUEUED), int(DeploymentStatus.RETRY_WAIT))


def _deployment(row: Any, attempt_rows: Sequence[Any] = ()) -> Deployment:
    return Deployment(
        id=row.id,
        app_id=row.app_id,
        app_version_id=row.app_version_id,
        execution_id=row.execution_id,
        target=row.target,
        status=DeploymentStatus(row.status),
        policy=Policy(
            attempt_timeout=row.attempt_timeout,
            max_attempts=row.max_attempts,
            initial_backoff=row.initial_backoff,
            max_backoff=row.max_backoff,
            overall_deadline=row.overall_deadline,
        ),
        attempts_made=row.attempts_made,
        next_attempt_us=row.next_attempt_us,
        created_us=row.created_us,
        updated_us=row.updated_us,
        url=row.url,
        error=row.error,
        finished_us=row.finished_us,
        lease_owner=row.lease_owner,
        cancel_requested=bool(row.cancel_requested),
        attempts=tuple(
            Attempt(
                number=a.number,
                worker_id=a.worker_id,
                started_us=a.started_us,
                finished_us=a.finished_us,
                outcome=AttemptOutcome(a.outcome),
                error=a.error,
            )
            for a in attempt_rows
        ),
    )


class DeploymentStore:
    """Deployments, their attempts and artifacts, and the outbox of notices."""

    def __init__(self, engine: AsyncEngine, rng: random.Random | None = None) -> None:
        self.engine = engine
        self.rng = rng or random.Random()

    def _lock(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        return stmt.with_for_update(skip_locked=True) if is_postgres(self.engine) else stmt

    # --- creation and reads ----------------------------------------------------------------

    async def create(self, request: DeployRequest, now_us: int) -> tuple[Deployment, bool]:
        """Store the artifact and queue the deployment; idempotent by app_version_id."""
        policy = request.policy
        deployment_id = str(uuid.uuid4())
        async with translate_errors("creating a deployment"), self.engine.begin() as conn:
            inserted = (
                await conn.execute(
                    upsert_insert(self.engine, deployments)
                    .values(
                        id=deployment_id,
                        app_id=request.app_id,
                        app_version_id=request.app_version_id,
                        execution_id=request.execution_id,
                        target=request.target,
                        status=int(DeploymentStatus.QUEUED),
                        attempt_timeout=policy.attempt_timeout,
                        max_attempts=policy.max_attempts,
                        initial_backoff=policy.initial_backoff,
                        max_backoff=policy.max_backoff,
                        overall_deadline=policy.overall_deadline,
                        attempts_made=0,
                        next_attempt_us=now_us,
                        created_us=now_us,
                        updated_us=now_us,
                    )
                    .on_conflict_do_nothing(index_elements=["app_version_id"])
                    .returning(deployments.c.id)
                )
            ).first()
            if inserted is not None:
                await conn.execute(
                    files.insert(),
                    [
                        {
                            "deployment_id": deployment_id,
                            "path": path,
                            "content": content,
                            "content_type": content_type,
                        }
                        for path, content, content_type in request.files
                    ],
                )
            existing = await self._read(conn, app_version_id=request.app_version_id)
        if existing.app_id != request.app_id or existing.execution_id != request.execution_id:
            raise FailedPrecondition(
                "this app version was deployed for another app or execution",
                field="app_version_id",
            )
        return existing, inserted is not None

    async def get(self, deployment_id: str) -> Deployment:
        async with translate_errors("reading a deployment"), self.engine.connect() as conn:
            return await self._read(conn, deployment_id=deployment_id)

    async def _read(
        self, conn: AsyncConnection, *, deployment_id: str = "", app_version_id: str = ""
    ) -> Deployment:
        where = (
            deployments.c.id == deployment_id
            if deployment_id
            else deployments.c.app_version_id == app_version_id
        )
        row = (await conn.execute(sa.select(deployments).where(where))).first()
        if row is None:
            raise NotFound(f"no deployment {deployment_id!r}", field="deployment_id")
        attempt_rows = (
            await conn.execute(
                sa.select(attempts)
                .where(attempts.c.deployment_id == row.id)
                .order_by(attempts.c.number)
            )
        ).all()
        return _deployment(row, attempt_rows)

    async def artifact(self, deployment_id: str) -> list[ArtifactFile]:
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

    # --- the worker's side ---------------------------------------------------------------

    async def claim(
        self, worker_id: str, lease: float, now_us: int
    ) -> Claim | Literal[True] | None:
        """Take the next due deployment: a Claim to attempt it now, True when a crashed
        worker's deployment was recovered (look again), None when nothing is due."""
        # Two queries, each served by its own partial index (an OR of both would sort the
        # whole backlog): crashed workers' deployments first, then the head of the queue.
        expired = self._lock(
            sa.select(deployments)
            .where(
                deployments.c.status == int(DeploymentStatus.RUNNING),
                deployments.c.lease_expires_us < now_us,
            )
            .order_by(deployments.c.lease_expires_us)
            .limit(1)
        )
        waiting = self._lock(
            sa.select(deployments)
            .where(deployments.c.status.in_(_WAITING), deployments.c.next_attempt_us <= now_us)
            .order_by(deployments.c.next_attempt_us)
            .limit(1)
        )
        async with translate_errors("claiming a deployment"), self.engine.begin() as conn:
            row = (await conn.execute(expired)).first() or (await conn.execute(waiting)).first()
            if row is None:
                return None
            if row.status == DeploymentStatus.RUNNING:
                await self._recover_lost(conn, row, now_us)
                return True
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
            _deployment(row),
            status=DeploymentStatus.RUNNING,
            attempts_made=number,
            lease_owner=worker_id,
            updated_us=now_us,
        )
        deadline = attempt_deadline_us(
            started_us=now_us, policy=deployment.policy, created_us=deployment.created_us
        )
        return Claim(deployment=deployment, attempt=number, deadline_us=deadline)

    async def _recover_lost(self, conn: AsyncConnection, row: Any, now_us: int) -> None:
        error = f"worker {row.lease_owner} stopped heartbeating"
        await self._end_attempt(conn, row.id, row.attempts_made, AttemptOutcome.LOST, error, now_us)
        step = after_failure(
            outcome=AttemptOutcome.LOST,
            error=error,
            attempts_made=row.attempts_made,
            policy=_deployment(row).policy,
            created_us=row.created_us,
            now_us=now_us,
            rng=self.rng,
        )
        await self._apply_step(conn, row, step.status, step.retry_at_us, step.reason, now_us)

    async def heartbeat(
        self, deployment_id: str, worker_id: str, lease: float, now_us: int
    ) -> bool | None:
        """Extend the lease; None if it was lost, else whether a cancel was requested."""
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
        return None if row is None else bool(row.cancel_requested)

    async def finish_attempt(
        self,
        claim: Claim,
        worker_id: str,
        *,
        outcome: AttemptOutcome,
        error: str,
        url: str,
        now_us: int,
    ) -> DeploymentStatus | None:
        """Record how an attempt ended; the deployment's new status, None if the lease was lost."""
        deployment_id = claim.deployment.id
        async with translate_errors("finishing an attempt"), self.engine.begin() as conn:
            owned = sa.select(deployments).where(
                deployments.c.id == deployment_id,
                deployments.c.lease_owner == worker_id,
                deployments.c.status == int(DeploymentStatus.RUNNING),
            )
            if is_postgres(self.engine):
                owned = owned.with_for_update()
            row = (await conn.execute(owned)).first()
            if row is None:
                return None
            await self._end_attempt(conn, deployment_id, claim.attempt, outcome, error, now_us)
            if outcome is AttemptOutcome.SUCCEEDED:
                await self._apply_step(conn, row, DeploymentStatus.SUCCEEDED, None, "", now_us, url)
                return DeploymentStatus.SUCCEEDED
            else:
                step = after_failure(
                    outcome=outcome,
                    error=error,
                    attempts_made=row.attempts_made,
                    policy=claim.deployment.policy,
                    created_us=row.created_us,
                    now_us=now_us,
                    rng=self.rng,
                )
                await self._apply_step(
                    conn, row, step.status, step.retry_at_us, step.reason, now_us
                )
                return step.status

    async def _end_attempt(
        self,
        conn: AsyncConnection,
        deployment_id: str,
        number: int,
        outcome: AttemptOutcome,
        error: str,
        now_us: int,
    ) -> None:
        await conn.execute(
            attempts.update()
            .where(attempts.c.deployment_id == deployment_id, attempts.c.number == number)
            .values(outcome=int(outcome), error=error[:4000], finished_us=now_us)
        )

    async def _apply_step(
        self,
        conn: AsyncConnection,
        row: Any,
        status: DeploymentStatus,
        retry_at_us: int | None,
        reason: str,
        now_us: int,
        url: str = "",
    ) -> None:
        """Move a deployment on; a terminal status also queues its notice."""
        values: dict[str, Any] = {
            "status": int(status),
            "lease_owner": None,
            "lease_expires_us": None,
            "updated_us": now_us,
            "error": reason[:4000],
        }
        if retry_at_us is not None:
            values["next_attempt_us"] = retry_at_us
        if status.terminal:
            values.update(finished_us=now_us, url=url)
        await conn.execute(deployments.update().where(deployments.c.id == row.id).values(**values))
        if status.terminal:
            notice = final_notice(
                status=status,
                deployment_id=row.id,
                attempts=row.attempts_made,
                url=url,
                error=reason,
            )
            await conn.execute(
                upsert_insert(self.engine, outbox)
                .values(
                    deployment_id=row.id,
                    app_id=row.app_id,
                    execution_id=row.execution_id,
                    failed=notice.failed,
                    metadata=notice.metadata,
                    created_us=now_us,
                    next_try_us=now_us,
                )
                .on_conflict_do_nothing(index_elements=["deployment_id"])
            )

    async def cancel(self, deployment_id: str, reason: str, now_us: int) -> Deployment:
        """Cancel at once if waiting; ask the running worker to stop if running."""
        async with translate_errors("cancelling a deployment"), self.engine.begin() as conn:
            stmt = sa.select(deployments).where(deployments.c.id == deployment_id)
            if is_postgres(self.engine):
                stmt = stmt.with_for_update()
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise NotFound(f"no deployment {deployment_id!r}", field="deployment_id")
            status = DeploymentStatus(row.status)
            if status is DeploymentStatus.RUNNING:
                await conn.execute(
                    deployments.update()
                    .where(deployments.c.id == deployment_id)
                    .values(cancel_requested=True, updated_us=now_us)
                )
            elif not status.terminal:
                await self._apply_step(
                    conn, row, DeploymentStatus.CANCELLED, None, reason or "cancelled", now_us
                )
            return await self._read(conn, deployment_id=deployment_id)

    # --- the outbox --------------------------------------------------------------------------

    async def claim_notices(self, now_us: int, lease: float, limit: int = 50) -> list[Any]:
        """Due notices, each held for `lease` seconds so no other deliverer sends it too."""
        pick = self._lock(
            sa.select(outbox)
            .where(outbox.c.delivered_us.is_(None), outbox.c.next_try_us <= now_us)
            .order_by(outbox.c.next_try_us)
            .limit(limit)
        )
        async with translate_errors("reading the outbox"), self.engine.begin() as conn:
            rows = list((await conn.execute(pick)).all())
            if rows:
                await conn.execute(
                    outbox.update()
                    .where(outbox.c.deployment_id.in_([r.deployment_id for r in rows]))
                    .values(next_try_us=now_us + int(lease * US))
                )
            return rows

    async def notice_delivered(self, deployment_id: str, now_us: int) -> None:
        async with translate_errors("updating the outbox"), self.engine.begin() as conn:
            await conn.execute(
                outbox.update()
                .where(outbox.c.deployment_id == deployment_id)
                .values(delivered_us=now_us, tries=outbox.c.tries + 1, last_error="")
            )

    async def notice_failed(self, deployment_id: str, error: str, next_try_us: int) -> None:
        async with translate_errors("updating the outbox"), self.engine.begin() as conn:
            await conn.execute(
                outbox.update()
                .where(outbox.c.deployment_id == deployment_id)
                .values(next_try_us=next_try_us, tries=outbox.c.tries + 1, last_error=error[:4000])
            )
