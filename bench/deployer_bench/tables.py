"""What the bench reads from the deployer's tables, every statement named here, and the
waits built on it: every deployment ended, every notice acknowledged by chat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
from harness import BenchError, Child

from appforge.api.deployer.v1 import deployer_pb2

STALL_TIMEOUT_S = 60.0  # no deployment ended for this long: the bench gives up
NOTICE_TIMEOUT_S = 60.0
POLL_S = 0.05  # how often the bench reads the deployments' statuses

SUCCEEDED = deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
TERMINAL = (
    deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED,
    deployer_pb2.DEPLOYMENT_STATUS_FAILED,
    deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT,
    deployer_pb2.DEPLOYMENT_STATUS_CANCELLED,
)

PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE status = ANY($2::smallint[])) AS ended,
       count(*) FILTER (WHERE status = $3) AS succeeded
FROM deploy_deployments WHERE app_id = $1
"""
DEPLOYMENTS_SQL = """
SELECT d.app_version_id, d.status, d.error, d.created_us, d.finished_us,
       (SELECT count(*) FROM deploy_attempts n WHERE n.deployment_id = d.id) AS attempts,
       a.started_us, a.finished_us AS attempt_finished_us, a.worker_id
FROM deploy_deployments d
LEFT JOIN deploy_attempts a ON a.deployment_id = d.id AND a.number = 1
WHERE d.app_id = $1
"""
NOTICES_SQL = """
SELECT count(*) FILTER (WHERE o.delivered_us IS NOT NULL) AS delivered,
       count(*) AS queued,
       coalesce(sum(o.tries), 0) AS tries,
       max(o.delivered_us) AS last_delivered_us,
       max(o.last_error) AS some_error
FROM deploy_outbox o WHERE o.app_id = $1
"""


def check_alive(children: Sequence[Child]) -> None:
    """Fail when one of the bench's services or workers has exited."""
    for child in children:
        if child.proc is not None and child.proc.returncode is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}")


async def wait_progress(
    progress: Callable[[], Awaitable[tuple[int, int]]],
    expected: int,
    children: Sequence[Child],
    what: str,
) -> int:
    """Poll `progress()` (how many `what` ended, how many succeeded) until `expected` ended;
    how many succeeded. Fails on a stall or when one of `children` exits."""
    last_ended, last_change = -1, time.monotonic()
    while True:
        check_alive(children)
        ended, succeeded = await progress()
        if ended >= expected:
            return succeeded
        if ended != last_ended:
            last_ended, last_change = ended, time.monotonic()
        elif time.monotonic() - last_change > STALL_TIMEOUT_S:
            raise BenchError(
                f"stalled: {ended}/{expected} {what} ended, none in {STALL_TIMEOUT_S:.0f}s"
            )
        await asyncio.sleep(POLL_S)


async def wait_ended(
    conn: asyncpg.Connection, app_id: str, expected: int, children: Sequence[Child]
) -> int:
    """Poll until `expected` deployments ended; how many succeeded. Fails on a stall or
    when a deployer exits."""

    async def progress() -> tuple[int, int]:
        row = await conn.fetchrow(PROGRESS_SQL, app_id, list(TERMINAL), SUCCEEDED)
        assert row is not None
        return int(row["ended"]), int(row["succeeded"])

    return await wait_progress(progress, expected, children, "deployments")


async def deployment_rows(conn: asyncpg.Connection, app_id: str) -> list[asyncpg.Record]:
    """Every deployment of the app, with its attempt count and its first attempt."""
    return list(await conn.fetch(DEPLOYMENTS_SQL, app_id))


@dataclass(frozen=True, kw_only=True)
class Notices:
    """The outbox once every notice was acknowledged, or the wait for it gave up."""

    delivered: int
    tries: int  # delivery attempts recorded, failed ones and repeated deliveries included
    last_delivered_us: int
    error: str


async def wait_notices(conn: asyncpg.Connection, app_id: str, expected: int) -> Notices:
    """Wait (bounded) until chat acknowledged `expected` notices."""
    deadline = time.monotonic() + NOTICE_TIMEOUT_S
    while True:
        row = await conn.fetchrow(NOTICES_SQL, app_id)
        assert row is not None
        delivered = int(row["delivered"])
        if delivered >= expected or time.monotonic() > deadline:
            return Notices(
                delivered=delivered,
                tries=int(row["tries"]),
                last_delivered_us=int(row["last_delivered_us"] or 0),
                error=str(row["some_error"] or ""),
            )
        await asyncio.sleep(POLL_S)
