"""One procrastinate configuration's numbers and checks, from the defers, the job rows
(`procrastinate_tables.job_rows`) and two CPU samples: the counterpart of `results` and
`checks` for the other queue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from harness import machine_shares

from .cpu import CpuSample, CpuUse
from .load import EnqueueResult
from .results import Latency


@dataclass(frozen=True, kw_only=True)
class QueueChecks:
    """What must hold after a procrastinate run; `problems` empty when all of it does."""

    succeeded: int
    one_start: int
    problems: list[str]


@dataclass(frozen=True, kw_only=True)
class QueueResult:
    """One procrastinate configuration's numbers, as printed."""

    processes: int
    jobs: int
    defer_errors: dict[str, int]
    first_defer_error: str
    defer_s: float
    defer_per_s: float
    elapsed_s: float
    jobs_per_s: float
    pickup: Latency  # the `deferred` event to the `started` event
    run: Latency  # `started` to `succeeded`
    end_to_end: Latency  # `deferred` to `succeeded`
    jobs_per_process: list[int]
    cpu_ms_per_job: dict[str, float]
    loop_busy: list[float]
    machine_cpu: dict[str, float]
    checks: QueueChecks


def check_jobs(rows: Sequence[asyncpg.Record], deferred: int) -> QueueChecks:
    """Every deferred job has a row, SUCCEEDED, started exactly once."""
    problems: list[str] = []
    succeeded = sum(1 for r in rows if r["status"] == "succeeded")
    one_start = sum(1 for r in rows if r["starts"] == 1)
    if len(rows) != deferred:
        problems.append(f"{len(rows)} job rows for {deferred} defers")
    if succeeded != deferred:
        statuses = Counter(str(r["status"]) for r in rows)
        problems.append(f"{succeeded}/{deferred} succeeded ({dict(statuses)})")
    if one_start != deferred:
        problems.append(f"{deferred - one_start} jobs started other than once")
    return QueueChecks(succeeded=succeeded, one_start=one_start, problems=problems)


def summarise_queue(
    processes: int,
    sent: EnqueueResult,
    rows: Sequence[asyncpg.Record],
    per_process: list[int],
    before: CpuSample,
    after: CpuSample,
) -> QueueResult:
    """Rates from the first defer sent to the last `succeeded` event; CPU per succeeded
    job (the worker processes, every PostgreSQL process, this client)."""
    ok = [r for r in rows if r["status"] == "succeeded" and r["succeeded_us"] is not None]
    last_us = max((r["succeeded_us"] for r in ok), default=sent.started_us)
    elapsed_s = max(1e-6, (last_us - sent.started_us) / 1e6)
    started = [r for r in rows if r["started_us"] is not None and r["deferred_us"] is not None]
    use = CpuUse.between(before, after, len(ok))
    return QueueResult(
        processes=processes,
        jobs=len(sent.version_ids),
        defer_errors=sent.errors,
        first_defer_error=sent.first_error,
        defer_s=sent.elapsed_s,
        defer_per_s=len(sent.version_ids) / sent.elapsed_s if sent.elapsed_s else 0.0,
        elapsed_s=elapsed_s,
        jobs_per_s=len(ok) / elapsed_s,
        pickup=Latency.of([r["started_us"] - r["deferred_us"] for r in started]),
        run=Latency.of([r["succeeded_us"] - r["started_us"] for r in ok if r["started_us"]]),
        end_to_end=Latency.of(
            [r["succeeded_us"] - r["deferred_us"] for r in ok if r["deferred_us"]]
        ),
        jobs_per_process=per_process,
        cpu_ms_per_job={
            "workers": use.workers_ms,
            "postgres": use.postgres_ms,
            "client": use.client_ms,
        },
        loop_busy=use.loop_busy,
        machine_cpu=machine_shares(before.machine, after.machine),
        checks=check_jobs(rows, len(sent.version_ids)),
    )
