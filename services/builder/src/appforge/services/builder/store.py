"""Every query the builder runs.

The ordering state of an execution's flow lives in its row: `allocate` hands out the next
seqs and hybrid-clock stamps in one atomic UPDATE, so concurrent tool completions, and a
builder restarted on another machine, never reuse a seq or a stamp, and stamps increase
strictly even when the wall clock stalls or steps back (DESIGN.md, invariant 2). Nothing
sleeps to order anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.builder.tables import (
    app_version_files,
    app_versions,
    deploy_requests,
    executions,
    tool_calls,
)
from appforge.services.common.db import is_postgres, translate_errors, upsert_insert
from appforge.services.common.errors import AlreadyExists, NotFound
from appforge.services.common.flow import ToolStatus

_OPEN = (int(ToolStatus.PENDING), int(ToolStatus.STREAMING))
TIMED_OUT_ERROR = "the tool call passed its deadline"


class ExecutionStatus(IntEnum):
    """Where an execution stands (matches appforge.builder.v1.ExecutionStatus)."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4
    TIMED_OUT = 5


@dataclass(frozen=True, kw_only=True)
class StoredExecution:
    """An execution row, with the version and deployment it led to (if any)."""

    id: str
    app_id: str
    user_message_id: str
    message_id: str
    status: ExecutionStatus
    model: str
    prompt: str
    last_seq: int
    error: str
    owner: str | None
    created_us: int
    updated_us: int
    finished_us: int | None
    app_version_id: str
    deployment_id: str


@dataclass(frozen=True, kw_only=True)
class StoredCall:
    """A tool call as the builder keeps it."""

    execution_id: str
    call_id: str
    seq: int
    position: int
    name: str
    status: ToolStatus
    arguments_json: str
    result_json: str
    error: str
    deadline_us: int
    stamp_us: int


@dataclass(frozen=True, kw_only=True)
class StoredVersion:
    """An app version: what an execution built, file by file."""

    id: str
    app_id: str
    execution_id: str
    created_us: int
    files: tuple[tuple[str, bytes], ...]


def _execution(row: Any) -> StoredExecution:
    return StoredExecution(
        id=row.id,
        app_id=row.app_id,
        user_message_id=row.user_message_id,
        message_id=row.message_id,
        status=ExecutionStatus(row.status),
        model=row.model,
        prompt=row.prompt,
        last_seq=row.last_seq,
        error=row.error,
        owner=row.owner,
        created_us=row.created_us,
        updated_us=row.updated_us,
        finished_us=row.finished_us,
        app_version_id=row.app_version_id or "",
        deployment_id=row.deployment_id or "",
    )


def _call(row: Any) -> StoredCall:
    return StoredCall(
        execution_id=row.execution_id,
        call_id=row.call_id,
        seq=row.seq,
        position=row.position,
        name=row.name,
        status=ToolStatus(row.status),
        arguments_json=row.arguments_json,
        result_json=row.result_json,
        error=row.error,
        deadline_us=row.deadline_us,
        stamp_us=row.stamp_us,
    )


class ExecutionStore:
    """Executions, the ordering state of their flows, tool calls, versions, deploy keys."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

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
    ) -> None:
        """Record a RUNNING execution owned by `owner`; one per user message.

        A second execution for the same user message is ALREADY_EXISTS, naming the first.
        """
        async with translate_errors("creating an execution"), self.engine.begin() as conn:
            inserted = await conn.execute(
                upsert_insert(self.engine, executions)
                .values(
                    id=execution_id,
                    app_id=app_id,
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

    async def set_message(self, execution_id: str, message_id: str) -> None:
        """Remember the execution's assistant message once chat has created it."""
        async with translate_errors("recording the message id"), self.engine.begin() as conn:
            await conn.execute(
                executions.update()
                .where(executions.c.id == execution_id)
                .values(message_id=message_id)
            )

    async def get(self, execution_id: str) -> StoredExecution:
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
        async with translate_errors("reading an execution"), self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFound(f"no execution {execution_id!r}", field="execution_id")
        return _execution(row)

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
        async with translate_errors("heartbeating executions"), self.engine.begin() as conn:
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
            return await _end(conn, execution_id, status, error, now_us, notice_due_us)

    async def fail_abandoned(
        self, now_us: int, *, stale_before_us: int, error: str, limit: int = 100
    ) -> list[str]:
        """Fail running executions whose builder stopped heartbeating; the ids failed.

        Safe with any number of sweepers (SKIP LOCKED, and `_end` only ends running ones).
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
        async with translate_errors("failing abandoned executions"), self.engine.begin() as conn:
            ids = [row.id for row in await conn.execute(pick)]
            return [
                i for i in ids if await _end(conn, i, ExecutionStatus.FAILED, error, now_us, now_us)
            ]

    async def claim_notices(
        self, now_us: int, *, retry_after_us: int, limit: int = 50
    ) -> list[str]:
        """Ids of ended executions whose final notice is due and unacknowledged, claimed
        for `retry_after_us` so that one replica delivers each at a time."""
        pick = (
            sa.select(executions.c.id)
            .where(
                executions.c.notified_us.is_(None),
                executions.c.status != int(ExecutionStatus.RUNNING),
                executions.c.notice_due_us <= now_us,
            )
            .order_by(executions.c.notice_due_us)
            .limit(limit)
        )
        if is_postgres(self.engine):
            pick = pick.with_for_update(skip_locked=True)
        async with translate_errors("claiming final notices"), self.engine.begin() as conn:
            ids = [row.id for row in await conn.execute(pick)]
            if ids:
                await conn.execute(
                    executions.update()
                    .where(executions.c.id.in_(ids))
                    .values(notice_due_us=now_us + retry_after_us)
                )
        return ids

    async def mark_notified(self, execution_id: str, now_us: int) -> None:
        """Chat acknowledged the execution's final notice."""
        async with translate_errors("recording a delivered notice"), self.engine.begin() as conn:
            await conn.execute(
                executions.update()
                .where(executions.c.id == execution_id)
                .values(notified_us=now_us)
            )

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
        async with translate_errors("allocating flow stamps"), self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFound(f"no execution {execution_id!r}", field="execution_id")
        last_seq, last_stamp = int(row.last_seq), int(row.last_stamp_us)
        return [(last_seq - count + 1 + n, last_stamp - count + 1 + n) for n in range(count)]

    # --- tool calls --------------------------------------------------------------------------

    async def add_calls(
        self,
        execution_id: str,
        seq: int,
        calls: Sequence[tuple[str, str, str]],
        *,
        stamp_us: int,
        deadline_us: int,
        now_us: int,
    ) -> None:
        """Record a batch's calls (call_id, name, arguments_json) as PENDING; replays are no-ops."""
        rows = [
            {
                "execution_id": execution_id,
                "call_id": call_id,
                "seq": seq,
                "position": position,
                "name": name,
                "status": int(ToolStatus.PENDING),
                "arguments_json": arguments,
                "deadline_us": deadline_us,
                "stamp_us": stamp_us,
                "updated_us": now_us,
            }
            for position, (call_id, name, arguments) in enumerate(calls)
        ]
        async with translate_errors("recording tool calls"), self.engine.begin() as conn:
            await conn.execute(
                upsert_insert(self.engine, tool_calls).on_conflict_do_nothing(
                    index_elements=["execution_id", "call_id"]
                ),
                rows,
            )

    async def start_call(self, execution_id: str, call_id: str, now_us: int) -> bool:
        """PENDING → STREAMING; False if the call had moved on already."""
        return await self._move(
            execution_id,
            call_id,
            (int(ToolStatus.PENDING),),
            {"status": int(ToolStatus.STREAMING)},
            now_us,
        )

    async def finish_call(
        self,
        execution_id: str,
        call_id: str,
        status: ToolStatus,
        *,
        result_json: str = "",
        error: str = "",
        now_us: int,
    ) -> bool:
        """Move an open call to a terminal state; False if another writer finished it first."""
        if not status.terminal:
            raise ValueError(f"{status.name} is not a terminal status")
        values = {"status": int(status), "result_json": result_json, "error": error[:4000]}
        return await self._move(execution_id, call_id, _OPEN, values, now_us)

    async def _move(
        self,
        execution_id: str,
        call_id: str,
        from_statuses: Sequence[int],
        values: dict[str, Any],
        now_us: int,
    ) -> bool:
        # The WHERE clause is the precedence rule: a state only moves forward, and of two
        # writers finishing one call (the builder and a sweeper) exactly one succeeds.
        stmt = (
            tool_calls.update()
            .where(
                tool_calls.c.execution_id == execution_id,
                tool_calls.c.call_id == call_id,
                tool_calls.c.status.in_(from_statuses),
            )
            .values(updated_us=now_us, **values)
            .returning(tool_calls.c.call_id)
        )
        async with translate_errors("updating a tool call"), self.engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def calls(self, execution_id: str) -> list[StoredCall]:
        async with translate_errors("reading tool calls"), self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(tool_calls)
                .where(tool_calls.c.execution_id == execution_id)
                .order_by(tool_calls.c.seq, tool_calls.c.position)
            )
            return [_call(r) for r in rows]

    async def time_out_expired_calls(self, now_us: int, limit: int = 100) -> list[StoredCall]:
        """Move open calls past their deadline to TIMED_OUT and end their executions as
        TIMED_OUT (their other open calls CANCELLED); the calls this sweep timed out.

        Safe with any number of sweepers: each execution is locked first (SKIP LOCKED on
        PostgreSQL, so a busy one waits for the next sweep), in the same order `finish`
        takes its locks, and calls only move while still open.
        """
        expired = (
            sa.select(tool_calls.c.execution_id)
            .where(tool_calls.c.status.in_(_OPEN), tool_calls.c.deadline_us < now_us)
            .order_by(tool_calls.c.deadline_us)
            .limit(limit)
        )
        async with translate_errors("sweeping tool calls"), self.engine.connect() as conn:
            execution_ids = list(dict.fromkeys(r.execution_id for r in await conn.execute(expired)))
        moved: list[StoredCall] = []
        for execution_id in execution_ids:
            moved.extend(await self._time_out_calls_of(execution_id, now_us))
        return moved

    async def _time_out_calls_of(self, execution_id: str, now_us: int) -> list[StoredCall]:
        lock = sa.select(executions.c.id).where(executions.c.id == execution_id)
        if is_postgres(self.engine):
            lock = lock.with_for_update(skip_locked=True)
        async with translate_errors("sweeping tool calls"), self.engine.begin() as conn:
            if await conn.scalar(lock) is None:
                return []
            rows = list(
                await conn.execute(
                    tool_calls.update()
                    .where(
                        tool_calls.c.execution_id == execution_id,
                        tool_calls.c.status.in_(_OPEN),
                        tool_calls.c.deadline_us < now_us,
                    )
                    .values(
                        status=int(ToolStatus.TIMED_OUT), error=TIMED_OUT_ERROR, updated_us=now_us
                    )
                    .returning(*tool_calls.c)
                )
            )
            calls = sorted((_call(r) for r in rows), key=lambda c: (c.seq, c.position))
            if calls:
                first = calls[0]
                error = f"tool call {first.call_id} ({first.name}) passed its deadline"
                await _end(conn, execution_id, ExecutionStatus.TIMED_OUT, error, now_us, now_us)
            return calls

    # --- app versions and the deploy-once key ------------------------------------------------

    async def save_version(
        self, execution_id: str, app_id: str, files: Sequence[tuple[str, bytes]], now_us: int
    ) -> str:
        """Store what an execution built; idempotent by execution (returns the version id)."""
        version_id = str(uuid.uuid4())
        async with translate_errors("saving an app version"), self.engine.begin() as conn:
            inserted = (
                await conn.execute(
                    upsert_insert(self.engine, app_versions)
                    .values(
                        id=version_id, app_id=app_id, execution_id=execution_id, created_us=now_us
                    )
                    .on_conflict_do_nothing(index_elements=["execution_id"])
                    .returning(app_versions.c.id)
                )
            ).first()
            if inserted is None:
                existing = await conn.scalar(
                    sa.select(app_versions.c.id).where(app_versions.c.execution_id == execution_id)
                )
                return str(existing)
            if files:
                await conn.execute(
                    app_version_files.insert(),
                    [{"version_id": version_id, "path": p, "content": c} for p, c in files],
                )
        return version_id

    async def version(self, version_id: str) -> StoredVersion:
        async with translate_errors("reading an app version"), self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(app_versions).where(app_versions.c.id == version_id))
            ).first()
            if row is None:
                raise NotFound(f"no app version {version_id!r}", field="app_version_id")
            files = await conn.execute(
                sa.select(app_version_files)
                .where(app_version_files.c.version_id == version_id)
                .order_by(app_version_files.c.path)
            )
            return StoredVersion(
                id=row.id,
                app_id=row.app_id,
                execution_id=row.execution_id,
                created_us=row.created_us,
                files=tuple((f.path, bytes(f.content)) for f in files),
            )

    async def claim_deploy(self, execution_id: str, app_version_id: str, now_us: int) -> bool:
        """True for exactly one caller per execution: the one that may call Deploy."""
        async with translate_errors("claiming the deployment"), self.engine.begin() as conn:
            inserted = await conn.execute(
                upsert_insert(self.engine, deploy_requests)
                .values(
                    execution_id=execution_id, app_version_id=app_version_id, requested_us=now_us
                )
                .on_conflict_do_nothing(index_elements=["execution_id"])
                .returning(deploy_requests.c.execution_id)
            )
            return inserted.first() is not None

    async def record_deployment(self, execution_id: str, deployment_id: str) -> None:
        async with translate_errors("recording the deployment"), self.engine.begin() as conn:
            await conn.execute(
                deploy_requests.update()
                .where(deploy_requests.c.execution_id == execution_id)
                .values(deployment_id=deployment_id)
            )


async def _end(
    conn: AsyncConnection,
    execution_id: str,
    status: ExecutionStatus,
    error: str,
    now_us: int,
    notice_due_us: int,
) -> bool:
    """End an execution if still running, cancelling its open calls; True if it did."""
    ended = await conn.execute(
        executions.update()
        .where(
            executions.c.id == execution_id,
            executions.c.status == int(ExecutionStatus.RUNNING),
        )
        .values(
            status=int(status),
            error=error[:4000],
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
        .where(tool_calls.c.execution_id == execution_id, tool_calls.c.status.in_(_OPEN))
        .values(
            status=int(ToolStatus.CANCELLED),
            error=f"the execution ended: {error}"[:4000] if error else "the execution ended",
            updated_us=now_us,
        )
    )
    return True
