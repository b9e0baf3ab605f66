"""The writes that move a deployment on: ending an attempt, and a new status with its notice.

Shared by the service's cancel and the workers' claims and finishes, always inside the
caller's transaction, so a deployment that ends and its notice are committed together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.deployer.domain import AttemptOutcome, NextStep, final_notice
from appforge.services.deployer.store.outbox import queue_notice
from appforge.services.deployer.tables import attempts, deployments

MAX_ERROR_CHARS = 4000


async def end_attempt(
    conn: AsyncConnection,
    *,
    deployment_id: str,
    number: int,
    outcome: AttemptOutcome,
    error: str,
    now_us: int,
) -> None:
    """Record how attempt `number` of a deployment ended."""
    await conn.execute(
        attempts.update()
        .where(attempts.c.deployment_id == deployment_id, attempts.c.number == number)
        .values(outcome=int(outcome), error=error[:MAX_ERROR_CHARS], finished_us=now_us)
    )


async def move_on(
    conn: AsyncConnection,
    engine: AsyncEngine,
    row: Any,
    step: NextStep,
    now_us: int,
    url: str = "",
) -> None:
    """Release the deployment (`row`, as read under lock) into `step`; a terminal status
    also queues its notice in the outbox."""
    values: dict[str, Any] = {
        "status": int(step.status),
        "lease_owner": None,
        "lease_expires_us": None,
        "updated_us": now_us,
        "error": step.reason[:MAX_ERROR_CHARS],
    }
    if step.retry_at_us is not None:
        values["next_attempt_us"] = step.retry_at_us
    if step.status.terminal:
        values.update(finished_us=now_us, url=url)
    await conn.execute(deployments.update().where(deployments.c.id == row.id).values(**values))
    if step.status.terminal:
        await queue_notice(
            conn,
            engine,
            deployment_id=row.id,
            app_id=row.app_id,
            execution_id=row.execution_id,
            notice=final_notice(
                status=step.status,
                deployment_id=row.id,
                attempts=row.attempts_made,
                url=url,
                error=step.reason,
            ),
            now_us=now_us,
        )
