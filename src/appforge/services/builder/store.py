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
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.builder.tables import (
    app_version_files,
    app_versions,
    deploy_requests,
    executions,
    tool_calls,
)
from appforge.services.common.db import is_postgres, translate_errors
from appforge.services.common.errors import NotFound
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


@dataclass(frozen=True, kw_only=True)
class StoredVersion:
    """An app version: what an execution built, file by file."""

    id: str
    app_id: str
    execution_id: str
    created_us: int
    files: tuple[tuple[str, bytes], ...]


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
    )


class ExecutionStore:
    """Executions, the ordering state of their flows, tool calls, versions, deploy keys."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if is_postgres(self.engine) else sqlite.insert)(table)

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
        async with translate_errors("creating an execution"), self.engine.begin() as conn:
            await conn.execute(
                executions.insert().values(
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
                "updated_us": now_us,
            }
            for position, (call_id, name, arguments) in enumerate(calls)
        ]
        async with translate_errors("recording tool calls"), self.engine.begin() as conn:
            await conn.execute(
                self._insert(tool_calls).on_conflict_do_nothing(
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
        """Move open calls past their deadline to TIMED_OUT; the calls this sweep moved.

        Safe with any number of sweepers: rows are claimed with SKIP LOCKED (PostgreSQL) and
        the update only applies to calls still open.
        """
        pick = (
            sa.select(tool_calls)
            .where(tool_calls.c.status.in_(_OPEN), tool_calls.c.deadline_us < now_us)
            .order_by(tool_calls.c.deadline_us)
            .limit(limit)
        )
        if is_postgres(self.engine):
            pick = pick.with_for_update(skip_locked=True)
        async with translate_errors("sweeping tool calls"), self.engine.begin() as conn:
            rows = list((await conn.execute(pick)).all())
            moved = []
            for row in rows:
                done = await conn.execute(
                    tool_calls.update()
                    .where(
                        tool_calls.c.execution_id == row.execution_id,
                        tool_calls.c.call_id == row.call_id,
                        tool_calls.c.status.in_(_OPEN),
                    )
                    .values(
                        status=int(ToolStatus.TIMED_OUT),
                        error=TIMED_OUT_ERROR,
                        updated_us=now_us,
                    )
                    .returning(tool_calls.c.call_id)
                )
                if done.first() is not None:
                    moved.append(_call(row))
        return [replace(c, status=ToolStatus.TIMED_OUT, error=TIMED_OUT_ERROR) for c in moved]

    # --- app versions and the deploy-once key ------------------------------------------------

    async def save_version(
        self, execution_id: str, app_id: str, files: Sequence[tuple[str, bytes]], now_us: int
    ) -> str:
        """Store what an execution built; idempotent by execution (returns the version id)."""
        version_id = str(uuid.uuid4())
        async with translate_errors("saving an app version"), self.engine.begin() as conn:
            inserted = (
                await conn.execute(
                    self._insert(app_versions)
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
                self._insert(deploy_requests)
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
