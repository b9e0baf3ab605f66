"""What the bench reads from procrastinate's tables (its 3.10 schema, `procrastinate/sql/
schema.sql`), every statement named here, and the waits built on it: the workers
registered, every job ended.

Timestamps come from `procrastinate_events`, which procrastinate's triggers fill with
`NOW()` on every status change: `deferred` (the job inserted, `todo`), `started` (fetched
by a worker, `doing`), `succeeded`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
from harness import BenchError, Child

from .tables import POLL_S, check_alive, wait_progress

REGISTER_TIMEOUT_S = 30.0

WORKERS_SQL = "SELECT count(*) FROM procrastinate_workers"
PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed', 'cancelled', 'aborted'))
         AS ended,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded
FROM procrastinate_jobs
"""
# Per worker while the workers still run: a worker's row goes when it stops, and its jobs'
# `worker_id` with it (ON DELETE SET NULL).
JOBS_PER_WORKER_SQL = """
SELECT worker_id, count(*) AS jobs FROM procrastinate_jobs
WHERE worker_id IS NOT NULL GROUP BY worker_id ORDER BY worker_id
"""
JOBS_SQL = """
SELECT j.id, j.status::text AS status, j.attempts,
       count(*) FILTER (WHERE e.type = 'started') AS starts,
       (extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'deferred')) * 1e6)::bigint
         AS deferred_us,
       (extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started')) * 1e6)::bigint
         AS started_us,
       (extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')) * 1e6)::bigint
         AS succeeded_us
FROM procrastinate_jobs j LEFT JOIN procrastinate_events e ON e.job_id = j.id
GROUP BY j.id
"""


async def wait_registered(conn: asyncpg.Connection, children: Sequence[Child]) -> None:
    """Wait (bounded) until every worker process registered in `procrastinate_workers`
    (it does so as it starts, before it fetches or listens)."""
    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    while True:
        check_alive(children)
        if int(await conn.fetchval(WORKERS_SQL)) >= len(children):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"procrastinate workers not registered after {REGISTER_TIMEOUT_S}s")
        await asyncio.sleep(POLL_S)


async def wait_ended(conn: asyncpg.Connection, expected: int, children: Sequence[Child]) -> int:
    """Poll until `expected` jobs ended; how many succeeded. Fails on a stall or when a
    worker exits."""

    async def progress() -> tuple[int, int]:
        row = await conn.fetchrow(PROGRESS_SQL)
        assert row is not None
        return int(row["ended"]), int(row["succeeded"])

    return await wait_progress(progress, expected, children, "procrastinate jobs")


async def jobs_per_worker(conn: asyncpg.Connection) -> list[int]:
    """How many jobs each registered worker ran, in registration order."""
    return [int(r["jobs"]) for r in await conn.fetch(JOBS_PER_WORKER_SQL)]


async def job_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every job, with its status, its `started` count and its events' times (us)."""
    return list(await conn.fetch(JOBS_SQL))
