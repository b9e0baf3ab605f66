"""Rows into domain values, and the row locks the deployer's queries take.

Nothing outside the store sees a row: every query answers with the types these build.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.common.db import is_postgres
from appforge.services.deployer.domain import (
    Attempt,
    AttemptOutcome,
    Deployment,
    DeploymentStatus,
    DeployRequest,
    Notice,
    PendingNotice,
    Policy,
)

WAITING = (int(DeploymentStatus.QUEUED), int(DeploymentStatus.RETRY_WAIT))
# The columns a Deploy writes (`new_deployment_row`); the others keep their defaults.
NEW_DEPLOYMENT_COLUMNS = (
    "id",
    "app_id",
    "app_version_id",
    "execution_id",
    "target",
    "status",
    "attempt_timeout",
    "max_attempts",
    "initial_backoff",
    "max_backoff",
    "overall_deadline",
    "attempts_made",
    "next_attempt_us",
    "created_us",
    "updated_us",
)


def new_deployment_row(request: DeployRequest, deployment_id: str, now_us: int) -> dict[str, Any]:
    """The row a Deploy queues: QUEUED, due now, with the request's policy."""
    policy = request.policy
    return {
        "id": deployment_id,
        "app_id": request.app_id,
        "app_version_id": request.app_version_id,
        "execution_id": request.execution_id,
        "target": request.target,
        "status": int(DeploymentStatus.QUEUED),
        "attempt_timeout": policy.attempt_timeout,
        "max_attempts": policy.max_attempts,
        "initial_backoff": policy.initial_backoff,
        "max_backoff": policy.max_backoff,
        "overall_deadline": policy.overall_deadline,
        "attempts_made": 0,
        "next_attempt_us": now_us,
        "created_us": now_us,
        "updated_us": now_us,
    }


def deployment_from_row(row: Any, attempt_rows: Sequence[Any] = ()) -> Deployment:
    """A deployments row (and its attempts' rows, in order) as a Deployment."""
    return Deployment(
        id=row.id,
        app_id=row.app_id,
        app_version_id=row.app_version_id,
        execution_id=row.execution_id,
        target=row.target,
        status=DeploymentStatus(row.status),
        policy=policy_from_row(row),
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


def policy_from_row(row: Any) -> Policy:
    return Policy(
        attempt_timeout=row.attempt_timeout,
        max_attempts=row.max_attempts,
        initial_backoff=row.initial_backoff,
        max_backoff=row.max_backoff,
        overall_deadline=row.overall_deadline,
    )


def pending_notice_from_row(row: Any, metadata: Any = None) -> PendingNotice:
    """An outbox row as the notice it carries (`metadata` decoded, where the row has it as
    JSON text)."""
    return PendingNotice(
        deployment_id=row.deployment_id,
        app_id=row.app_id,
        execution_id=row.execution_id,
        notice=Notice(
            failed=bool(row.failed), metadata=dict(row.metadata if metadata is None else metadata)
        ),
        tries=row.tries,
    )


def skip_locked(engine: AsyncEngine, stmt: sa.Select[Any]) -> sa.Select[Any]:
    """`stmt` locking the rows it reads, skipping rows others hold (PostgreSQL).

    On SQLite every transaction is BEGIN IMMEDIATE, so a plain SELECT is already exclusive.
    """
    return stmt.with_for_update(skip_locked=True) if is_postgres(engine) else stmt


def for_update(engine: AsyncEngine, stmt: sa.Select[Any]) -> sa.Select[Any]:
    """`stmt` locking the rows it reads, waiting for others to let go (PostgreSQL)."""
    return stmt.with_for_update() if is_postgres(engine) else stmt
