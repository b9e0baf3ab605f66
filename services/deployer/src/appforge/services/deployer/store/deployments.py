"""Deployments as the service sees them: queue one with its artifact, read it, cancel it."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.common.db import translate_errors, upsert_insert
from appforge.services.common.errors import FailedPrecondition, NotFound
from appforge.services.common.pg_hot import HotPool
from appforge.services.deployer.domain import (
    Deployment,
    DeploymentStatus,
    DeployRequest,
    Enqueued,
    NextStep,
)
from appforge.services.deployer.store import pg_steps
from appforge.services.deployer.store.rows import (
    deployment_from_row,
    for_update,
    new_deployment_row,
)
from appforge.services.deployer.store.transitions import move_on
from appforge.services.deployer.tables import attempts, deployments, files


class DeploymentStore:
    """Deployments and their artifacts: what Deploy, GetDeployment and CancelDeployment touch."""

    def __init__(self, engine: AsyncEngine, hot: HotPool | None) -> None:
        self.engine = engine
        self.hot = hot  # PostgreSQL: the steps of `pg_steps`; None on SQLite

    async def create(self, request: DeployRequest, now_us: int) -> Enqueued:
        """Store the artifact and queue the deployment; idempotent by app_version_id."""
        if self.hot is not None:
            return await self._create_in_one(self.hot, request, now_us)
        deployment_id = str(uuid.uuid4())
        async with translate_errors("creating a deployment"), self.engine.begin() as conn:
            inserted = (
                await conn.execute(
                    upsert_insert(self.engine, deployments)
                    .values(new_deployment_row(request, deployment_id, now_us))
                    .on_conflict_do_nothing(index_elements=["app_version_id"])
                    .returning(*deployments.c)  # the new row as stored: not read again
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
                return Enqueued(deployment=deployment_from_row(inserted), created=True)
            existing = await self._read(conn, app_version_id=request.app_version_id)
        return _queued_already(request, existing)

    async def _create_in_one(self, hot: HotPool, request: DeployRequest, now_us: int) -> Enqueued:
        """`create` in one statement: the deployment and its files, or nothing when the
        version is queued already (then read as it is)."""
        async with translate_errors("creating a deployment"):
            inserted = await hot.fetchrow(
                pg_steps.CREATE,
                **new_deployment_row(request, str(uuid.uuid4()), now_us),
                paths=[path for path, _, _ in request.files],
                contents=[content for _, content, _ in request.files],
                content_types=[content_type for _, _, content_type in request.files],
            )
            if inserted is not None:
                return Enqueued(deployment=deployment_from_row(inserted), created=True)
            async with self.engine.connect() as conn:
                existing = await self._read(conn, app_version_id=request.app_version_id)
        return _queued_already(request, existing)

    async def get(self, deployment_id: str) -> Deployment:
        async with translate_errors("reading a deployment"), self.engine.connect() as conn:
            return await self._read(conn, deployment_id=deployment_id)

    async def cancel(self, deployment_id: str, reason: str, now_us: int) -> Deployment:
        """Cancel at once if waiting; ask the running worker to stop if running."""
        async with translate_errors("cancelling a deployment"), self.engine.begin() as conn:
            stmt = for_update(
                self.engine, sa.select(deployments).where(deployments.c.id == deployment_id)
            )
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise NotFound(f"no deployment {deployment_id!r}", field="deployment_id")
            status = DeploymentStatus(row.status)
            if status is DeploymentStatus.RUNNING:
                # The worker's next heartbeat reads this and stops the attempt.
                await conn.execute(
                    deployments.update()
                    .where(deployments.c.id == deployment_id)
                    .values(cancel_requested=True, updated_us=now_us)
                )
            elif not status.terminal:
                step = NextStep(status=DeploymentStatus.CANCELLED, reason=reason or "cancelled")
                await move_on(conn, self.engine, row, step, now_us)
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
        return deployment_from_row(row, attempt_rows)


def _queued_already(request: DeployRequest, existing: Deployment) -> Enqueued:
    """The deployment already queued for the request's version: the same one again, unless
    it was for another app or execution."""
    if existing.app_id != request.app_id or existing.execution_id != request.execution_id:
        raise FailedPrecondition(
            "this app version was deployed for another app or execution",
            field="app_version_id",
        )
    return Enqueued(deployment=existing, created=False)
