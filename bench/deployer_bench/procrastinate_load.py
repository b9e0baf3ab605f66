"""The procrastinate load: `count` defers of the no-op task, `concurrency` in flight, from
this client (`defer_async` on a PsycopgConnector app), as the Deploy calls are on the
appforge side."""

from __future__ import annotations

import procrastinate

from .load import EnqueueResult, send_all
from .procrastinate_app import NOOP_TASK


async def defer_jobs(app: procrastinate.App, *, count: int, concurrency: int) -> EnqueueResult:
    """Defer `count` no-op jobs, `concurrency` in flight; `version_ids` are the job ids."""
    task = app.tasks[NOOP_TASK]

    async def defer(_: int) -> str:
        return str(await task.defer_async())

    def refusal(exc: Exception) -> tuple[str, str] | None:
        if isinstance(exc, procrastinate.exceptions.ProcrastinateException):
            return type(exc).__name__, f"{type(exc).__name__}: {exc}"
        return None

    return await send_all(count, concurrency, defer, refusal)
