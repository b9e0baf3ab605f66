"""The queue's steps on PostgreSQL: one statement each, built and compiled once, run on the
deployer's own asyncpg pool (`common.pg_hot`) in autocommit, so each is one round trip.

- `CREATE`: the deployment and every file of its artifact, or nothing when its
  `app_version_id` is queued already (then the store reads the one there);
- `CLAIM`: the head of the queue (`FOR UPDATE SKIP LOCKED`) leased, its attempt row
  written, and its files read (by path);
- `LEASE_EXPIRED`: whether any worker's lease ran out (taking one over is a transaction);
- `HEARTBEAT`: the lease extended, if this worker still holds it;
- `SUCCEED`: under the deployment's lock, if the lease is still ours, the attempt ended, the
  deployment SUCCEEDED with its URL and its notice queued in the outbox;
- `SUCCEED_AND_CLAIM`: both, for a worker that goes on to its next deployment;
- `CLAIM_NOTICES`, `NOTICES_DELIVERED` (many at once), `NOTICE_FAILED`: the deliverer's side
  of the outbox.

SQLite runs the same steps as transactions of several statements (`attempts.py`,
`deployments.py`, `outbox.py`), and `HEARTBEAT` and `NOTICE_FAILED`, which use nothing
PostgreSQL's own, as their Core statements; the tests run both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from appforge.services.common.pg_hot import Prepared
from appforge.services.deployer.domain import AttemptOutcome, DeploymentStatus
from appforge.services.deployer.store.rows import NEW_DEPLOYMENT_COLUMNS
from appforge.services.deployer.tables import attempts, deployments, files, outbox

_RUNNING = int(DeploymentStatus.RUNNING)
# The predicate of the partial index the claim reads (`tables.py`), word for word.
_WAITING = deployments.c.status.in_(
    [sa.literal_column(str(int(s))) for s in (DeploymentStatus.QUEUED, DeploymentStatus.RETRY_WAIT)]
)


def _param(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def _create() -> Prepared:
    inserted = (
        postgresql.insert(deployments)
        .values({name: _param(name, deployments.c[name]) for name in NEW_DEPLOYMENT_COLUMNS})
        .on_conflict_do_nothing(index_elements=["app_version_id"])
        .returning(*deployments.c)
        .cte("inserted")
    )
    artifact = (
        sa.func.unnest(
            sa.bindparam("paths", type_=postgresql.ARRAY(sa.String)),
            sa.bindparam("contents", type_=postgresql.ARRAY(sa.LargeBinary)),
            sa.bindparam("content_types", type_=postgresql.ARRAY(sa.String)),
        )
        .table_valued("path", "content", "content_type")
        .render_derived()
        .alias("artifact")
    )
    stored = (
        files.insert()
        .from_select(
            ["deployment_id", "path", "content", "content_type"],
            sa.select(
                inserted.c.id, artifact.c.path, artifact.c.content, artifact.c.content_type
            ).select_from(inserted.join(artifact, sa.true())),
        )
        .cte("stored")
    )
    return Prepared.of(sa.select(inserted).add_cte(stored))


@dataclass(frozen=True)
class _Claiming:
    """The claim's parts: the leased row, the attempt row it writes, the artifact's columns."""

    leased: sa.CTE
    started: sa.CTE
    artifact: list[sa.Label[Any]]


def _claiming() -> _Claiming:
    head = (
        sa.select(deployments.c.id)
        .where(_WAITING, deployments.c.next_attempt_us <= sa.bindparam("now_us"))
        .order_by(deployments.c.next_attempt_us)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    leased = (
        deployments.update()
        .where(deployments.c.id == head)
        .values(
            status=_RUNNING,
            attempts_made=deployments.c.attempts_made + 1,
            lease_owner=_param("worker_id", deployments.c.lease_owner),
            lease_expires_us=_param("lease_until_us", deployments.c.lease_expires_us),
            updated_us=_param("now_us", deployments.c.updated_us),
        )
        .returning(*deployments.c)
        .cte("leased")
    )
    started = (
        attempts.insert()
        .from_select(
            ["deployment_id", "number", "worker_id", "started_us", "outcome"],
            sa.select(
                leased.c.id,
                leased.c.attempts_made,
                _param("worker_id", attempts.c.worker_id),
                _param("now_us", attempts.c.started_us),
                sa.literal(int(AttemptOutcome.RUNNING), sa.SmallInteger),
            ),
        )
        .cte("started")
    )

    def of_artifact(column: sa.Column[Any], label: str) -> sa.Label[Any]:
        ordered = postgresql.aggregate_order_by(column, files.c.path)
        return (
            sa.select(sa.func.array_agg(ordered))
            .where(files.c.deployment_id == leased.c.id)
            .scalar_subquery()
            .label(label)
        )

    artifact = [
        of_artifact(files.c.path, "paths"),
        of_artifact(files.c.content, "contents"),
        of_artifact(files.c.content_type, "content_types"),
    ]
    return _Claiming(leased, started, artifact)


@dataclass(frozen=True)
class _Succeeding:
    """The success's parts: the row still ours (`owned`), and what it writes."""

    owned: sa.CTE
    writes: tuple[sa.CTE, ...]


def _succeeding() -> _Succeeding:
    owned = (
        sa.select(deployments.c.id)
        .where(
            deployments.c.id == sa.bindparam("deployment_id"),
            deployments.c.lease_owner == sa.bindparam("worker_id"),
            deployments.c.status == _RUNNING,
        )
        .with_for_update()
        .cte("owned")
    )
    ended = (
        attempts.update()
        .where(
            attempts.c.deployment_id.in_(sa.select(owned.c.id)),
            attempts.c.number == sa.bindparam("number"),
        )
        .values(
            outcome=int(AttemptOutcome.SUCCEEDED),
            error="",
            finished_us=_param("now_us", attempts.c.finished_us),
        )
        .cte("ended")
    )
    released = (
        deployments.update()
        .where(deployments.c.id.in_(sa.select(owned.c.id)))
        .values(
            status=int(DeploymentStatus.SUCCEEDED),
            lease_owner=None,
            lease_expires_us=None,
            updated_us=_param("now_us", deployments.c.updated_us),
            error="",
            finished_us=_param("now_us", deployments.c.finished_us),
            url=_param("url", deployments.c.url),
        )
        .cte("released")
    )
    queued = (
        postgresql.insert(outbox)
        .from_select(
            [
                "deployment_id",
                "app_id",
                "execution_id",
                "failed",
                "metadata",
                "created_us",
                "next_try_us",
            ],
            sa.select(
                owned.c.id,
                _param("app_id", outbox.c.app_id),
                _param("execution_id", outbox.c.execution_id),
                sa.literal(False, sa.Boolean),
                # JSON text, cast by PostgreSQL (the plain pool has no JSON codec).
                sa.cast(sa.bindparam("metadata", type_=sa.Text), postgresql.JSONB),
                _param("now_us", outbox.c.created_us),
                # Now, or later when the recording process delivers it itself (held).
                _param("notice_due_us", outbox.c.next_try_us),
            ),
        )
        .on_conflict_do_nothing(index_elements=["deployment_id"])
        .cte("queued")
    )
    return _Succeeding(owned, (ended, released, queued))


def _claim() -> Prepared:
    claiming = _claiming()
    return Prepared.of(sa.select(claiming.leased, *claiming.artifact).add_cte(claiming.started))


def _succeed() -> Prepared:
    succeeding = _succeeding()
    return Prepared.of(sa.select(succeeding.owned.c.id).add_cte(*succeeding.writes))


def _succeed_and_claim() -> Prepared:
    """`SUCCEED` and `CLAIM` in one statement: one row, `finished_id` (NULL when the lease
    was lost and nothing was recorded) and the next deployment's columns (NULL when none
    is due). The two touch different rows: the one ending is RUNNING, the one claimed was
    waiting."""
    succeeding = _succeeding()
    claiming = _claiming()
    one = sa.select(sa.literal(1).label("one")).subquery("one")
    finished = sa.select(succeeding.owned.c.id).scalar_subquery().label("finished_id")
    return Prepared.of(
        sa.select(finished, *claiming.leased.c, *claiming.artifact)
        .select_from(one.outerjoin(claiming.leased, sa.true()))
        .add_cte(*succeeding.writes, claiming.started)
    )


# Whether any lease has expired (the partial index of running deployments): the look for
# lost leases, in its usual answer (none), without a transaction.
LEASE_EXPIRED = Prepared.of(
    sa.select(deployments.c.id)
    .where(
        deployments.c.status == _RUNNING, deployments.c.lease_expires_us < sa.bindparam("now_us")
    )
    .limit(1)
)
HEARTBEAT = Prepared.of(
    deployments.update()
    .where(
        deployments.c.id == sa.bindparam("deployment_id"),
        deployments.c.lease_owner == sa.bindparam("worker_id"),
        deployments.c.status == _RUNNING,
    )
    .values(lease_expires_us=_param("lease_until_us", deployments.c.lease_expires_us))
    .returning(deployments.c.cancel_requested)
)
CLAIM_NOTICES = Prepared.of(
    outbox.update()
    .where(
        outbox.c.deployment_id.in_(
            sa.select(outbox.c.deployment_id)
            .where(outbox.c.delivered_us.is_(None), outbox.c.next_try_us <= sa.bindparam("now_us"))
            .order_by(outbox.c.next_try_us)
            .limit(sa.bindparam("limit", type_=sa.Integer))
            .with_for_update(skip_locked=True)
        )
    )
    .values(next_try_us=_param("held_until_us", outbox.c.next_try_us))
    .returning(
        outbox.c.deployment_id,
        outbox.c.app_id,
        outbox.c.execution_id,
        outbox.c.failed,
        # As JSON text: the plain pool decodes no JSON itself.
        sa.cast(outbox.c.metadata, sa.Text).label("metadata"),
        outbox.c.tries,
    )
)
NOTICES_DELIVERED = Prepared.of(
    outbox.update()
    .where(
        outbox.c.deployment_id
        == sa.any_(sa.bindparam("deployment_ids", type_=postgresql.ARRAY(sa.String)))
    )
    .values(
        delivered_us=_param("now_us", outbox.c.delivered_us),
        tries=outbox.c.tries + 1,
        last_error="",
    )
)
NOTICE_FAILED = Prepared.of(
    outbox.update()
    # Parameters not named as columns: SQLite runs this statement too, and SQLAlchemy keeps
    # column names for its own SET parameters.
    .where(outbox.c.deployment_id == sa.bindparam("of_deployment"))
    .values(
        next_try_us=_param("retry_at_us", outbox.c.next_try_us),
        tries=outbox.c.tries + 1,
        last_error=_param("error", outbox.c.last_error),
    )
)
CREATE = _create()
CLAIM = _claim()
SUCCEED = _succeed()
SUCCEED_AND_CLAIM = _succeed_and_claim()
