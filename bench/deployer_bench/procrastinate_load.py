"""The procrastinate load: `count` defers of the no-op task, `concurrency` in flight, from
this client (`defer_async` on a PsycopgConnector app), as the Deploy calls are on the
appforge side."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import procrastinate

from .load import EnqueueResult
from .procrastinate_app import NOOP_TASK


async def defer_jobs(app: procrastinate.App, *, count: int, concurrency: int) -> EnqueueResult:
    """Defer `count` no-op jobs, `concurrency` in flight; `version_ids` are the job ids."""
    task = app.tasks[NOOP_TASK]
    next_n = 0
    done: list[str] = []
    errors: Counter[str] = Counter()
    first_error = ""

    async def sender() -> None:
        nonlocal next_n, first_error
        while next_n < count:
            next_n += 1
            try:
                done.append(str(await task.defer_async()))
            except procrastinate.exceptions.ProcrastinateException as exc:
                errors[type(exc).__name__] += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"

    started_us = time.time_ns() // 1000
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return EnqueueResult(
        version_ids=done,
        errors=dict(errors),
        first_error=first_error,
        started_us=started_us,
        elapsed_s=time.perf_counter() - started,
    )
