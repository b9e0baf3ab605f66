"""Executions: their rows, their lifecycle, and the ordering state of their flows.

The ordering state of an execution's flow lives in its row: `allocate` hands out the next
seqs and hybrid-clock stamps in one atomic UPDATE, so concurrent tool completions, and a
builder restarted on another machine, never reuse a seq or a stamp, and stamps increase
strictly even when the wall clock stalls or steps back (`max(now_us, last_us + 1)`).
Nothing sleeps to order anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.builder.domain import Execution, ExecutionStatus
from appforge.services.builder.store.rows import (
    MAX_ERROR_CHARS,
    OPEN_CALL_STATUSES,
    execution_from_row,
)
from appforge.services.builder.tables import app_versions, deploy_requests, executions, tool_calls
from appforge.services.common.db import is_postgres, translate_errors, upsert_insert
from appforge.services.common.errors import AlreadyExists, NotFound, Overloaded
from appforge.services.common.flow import ToolStatus


class ExecutionQueries:
    """Creating, reading, heartbeating and ending executions; their flows' seqs and stamps."""

    engine: AsyncEngine
    statements: AsyncEngine  # the same pool, for single statements (no BEGIN/COMMIT)

    async def create(
        self,
        *,
        execution_id: str,
        app_id: str,
        model: str,
        prompt: str,
        user_message_id: str,
        owner: str,
        now_us: int,
        team_id: str = "",
        team_limit: int | None = None,
    ) -> None:
        """Record a RUNNING execution owned by `owner`; one per user message.

        A second execution for the same user message is ALREADY_EXISTS, naming the first.
        With `team_limit`, a team that already runs that many executions (in any replica)
        gets Overloaded and nothing is written: the count and the insert are one
        transaction, serialised per team (an advisory lock on PostgreSQL, BEGIN IMMEDIATE
        on SQLite), so two replicas cannot both take the last slot.
        """
        async with translate_errors("creating an execution"), self.engine.begin() as conn:
            if team_limit is not None:
                await _check_team_share(conn, team_id, team_limit, lock=True)
            inserted = await conn.execute(
                upsert_insert(self.engine, executions)
                .values(
                    id=execution_id,
                    app_id=app_id,
                    team_id=team_id,
                    user_message_id=user_message_id,
                    status=int(ExecutionStatus.RUNNING),
                    model=model,
                    prompt=prompt,
                    owner=owner,
                    heartbeat_us=now_us,
                    created_us=now_us,
                    updated_us=now_us,
                )
                .on_conflict_do_nothing(index_elements=["app_id", "user_message_id"])
                .returning(executions.c.id)
            )
            if inserted.first() is None:
                existing = await conn.scalar(
                    sa.select(executions.c.id).where(
                        executions.c.app_id == app_id,
                        executions.c.user_message_id == user_message_id,
                    )
                )
                raise AlreadyExists(
                    f"user message {user_message_id!r} already started execution {existing}",
                    field="user_message_id",
                )

    async def check_team_share(self, team_id: str, limit: int) -> None:
        """Overloaded when `team_id` already runs `limit` executions, in every replica. No
        lock: a cheap refusal before anything is written; `create` with a `team_limit` is
        the check that counts."""
        async with (
            translate_errors("counting a team's executions"),
            self.statements.connect() as conn,
        ):
            await _check_team_share(conn, team_id, limit, lock=False)

    async def set_message(self, execution_id: str, message_id: str) -> None:
        """Remember the execution's assistant message once chat has created it."""
        async with translate_errors("recording the message id"), self.statements.begin() as conn:
            await conn.execute(
                executions.update()
                .where(executions.c.id == execution_id)
                .values(message_id=message_id)
            )

    async def get(self, execution_id: str) -> Execution:
        """The execution with the version and deployment it led to; NotFound if none."""
        stmt = (
            sa.select(
                executions,
                app_versions.c.id.label("app_version_id"),
                deploy_requests.c.deployment_id,
            )
            .select_from(
                executions.outerjoin(
                    app_versions, app_versions.c.execution_id == executions.c.id
                ).outerjoin(deploy_requests, deploy_requests.c.execution_id == executions.c.id)
            )
            .where(executions.c.id == execution_id)
        )
        async with translate_errors("reading an execution"), self.statements.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFound(f"no execution {execution_id!r}", field="execution_id")
        return execution_from_row(row)

    async def heartbeat(self, owner: str, execution_ids: Sequence[str], now_us: int) -> set[str]:
        """Prove `owner` alive for the executions it is running; those still RUNNING.

        Only the ids its runners hold are touched: a row whose runner is gone stops
        heartbeating, and the sweeper fails it.
        """
        if not execution_ids:
            return set()
        stmt = (
            executions.update()
            .where(
                executions.c.id.in_(list(execution_ids)),
                executions.c.owner == owner,
                executions.c.status == int(ExecutionStatus.RUNNING),
            )
            .values(heartbeat_us=now_us)
            .returning(executions.c.id)
        )
        async with translate_errors("heartbeating executions"), self.statements.begin() as conn:
            return {row.id for row in await conn.execute(stmt)}

    async def finish(
        self,
        execution_id: str,
        status: ExecutionStatus,
        *,
        error: str = "",
        now_us: int,
        notice_due_us: int,
    ) -> bool:
        """End a running execution; False if it had ended already (the first end wins).

        Calls still open become CANCELLED in the same transaction, so nothing of an ended
        execution stays in flight. Its final notice is due at `notice_due_us`: the caller
        normally delivers it at once; the outbox redelivers it after that.
        """
        async with translate_errors("finishing an execution"), self.engine.begin() as conn:
            return await end_execution(conn, execution_id, status, error, now_us, notice_due_us)

    async def fail_abandoned(
        self, now_us: int, *, stale_before_us: int, error: str, limit: int = 100
    ) -> list[str]:
        """Fail running executions whose builder stopped heartbeating; the ids failed.

        Safe with any number of sweepers (SKIP LOCKED, and `end_execution` only ends
        running ones).
        """
        pick = (
            sa.select(executions.c.id)
            .where(
                executions.c.status == int(ExecutionStatus.RUNNING),
                executions.c.heartbeat_us < stale_before_us,
            )
            .order_by(executions.c.heartbeat_us)
            .limit(limit)
        )
        if is_postgres(self.engine):
            pick = pick.with_for_update(skip_locked=True)
        failed = ExecutionStatus.FAILED
        async with translate_errors("failing abandoned executions"), self.engine.begin() as conn:
            ids = [row.id for row in await conn.execute(pick)]
            return [i for i in ids if await end_execution(conn, i, failed, error, now_us, now_us)]

    async def allocate(self, execution_id: str, count: int, now_us: int) -> list[tuple[int, int]]:
        """The next `count` (seq, stamp) pairs of an execution's flow.

        seq continues from the last one handed out; the stamps are max(now, last + 1), then
        one microsecond apart: strictly increasing whatever the wall clock does.
        """
        if count < 1:
            raise ValueError(f"allocate at least one stamp, not {count}")
        greatest = sa.func.greatest if is_postgres(self.engine) else sa.func.max
        stmt = (
            executions.update()
            .where(executions.c.id == execution_id)
            .values(
                last_seq=executions.c.last_seq + count,
                last_stamp_us=greatest(now_us + count - 1, executions.c.last_stamp_us + count),
                updated_us=now_us,
            )
            .returning(executions.c.last_seq, executions.c.last_stamp_us)
        )
        async with translate_errors("allocating flow stamps"), self.statements.begin() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFound(f"no execution {execution_id!r}", field="execution_id")
        last_seq, last_stamp = int(row.last_seq), int(row.last_stamp_us)
        return [(last_seq - count + 1 + n, last_stamp - count + 1 + n) for n in range(count)]


async def end_execution(
    conn: AsyncConnection,
    execution_id: str,
    status: ExecutionStatus,
    error: str,
    now_us: int,
    notice_due_us: int,
) -> bool:
    """End an execution if still running, cancelling its open calls; True if it did.

    Every end goes through here (finish, the abandoned sweep, the deadline sweep), inside
    the caller's transaction, so an end and its cancelled calls commit together.
    """
    ended = await conn.execute(
        executions.update()
        .where(
            executions.c.id == execution_id,
            executions.c.status == int(ExecutionStatus.RUNNING),
        )
        .values(
            status=int(status),
            error=error[:MAX_ERROR_CHARS],
            finished_us=now_us,
            updated_us=now_us,
            notice_due_us=notice_due_us,
        )
        .returning(executions.c.id)
    )
    if ended.first() is None:
        return False
    await conn.execute(
        tool_calls.update()
        .where(
            tool_calls.c.execution_id == execution_id,
            tool_calls.c.status.in_(OPEN_CALL_STATUSES),
        )
        .values(
            status=int(ToolStatus.CANCELLED),
            error=(f"the execution ended: {error}" if error else "the execution ended")[
                :MAX_ERROR_CHARS
            ],
            updated_us=now_us,
        )
    )
    return True


async def _check_team_share(conn: AsyncConnection, team_id: str, limit: int, *, lock: bool) -> None:
    """Overloaded when the team runs `limit` executions; with `lock` (inside the inserting
    transaction), the next Build of this team waits for the commit (PostgreSQL's advisory
    lock; SQLite's BEGIN IMMEDIATE serialises writers already)."""
    if lock and is_postgres(conn):
        await conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("appforge-team:" + team_id)))
        )
    running = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(executions)
        .where(executions.c.team_id == team_id, executions.c.status == int(ExecutionStatus.RUNNING))
    )
    if (running or 0) >= limit:
        raise Overloaded(
            f"team {team_id!r} already runs {running} executions, its share "
            f"(APPFORGE_TEAM_MAX_RUNNING_BUILDS={limit}); try again when one has ended",
            field="app_id",
        )
