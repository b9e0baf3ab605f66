"""One configuration's numbers: duration percentiles, and the `PhaseResult` summarised from
the Deploy calls, the deployment rows, two CPU samples and the checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from harness import machine_shares, percentile

from .checks import Checks
from .cpu import CpuSample, CpuUse
from .load import EnqueueResult
from .tables import SUCCEEDED


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Percentiles of one duration, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_us: Sequence[int]) -> Latency:
        ordered = sorted(values_us)
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 0.50) / 1000,
            p95_ms=percentile(ordered, 0.95) / 1000,
            p99_ms=percentile(ordered, 0.99) / 1000,
            max_ms=(ordered[-1] / 1000) if ordered else 0.0,
        )


@dataclass(frozen=True, kw_only=True)
class PhaseResult:
    """One configuration's numbers, as printed."""

    processes: int
    deployments: int
    enqueue_errors: dict[str, int]
    first_enqueue_error: str
    enqueue_s: float
    enqueue_per_s: float
    elapsed_s: float
    deployments_per_s: float
    claim: Latency
    attempt: Latency
    end_to_end: Latency
    claims_per_process: list[int]
    cpu_ms_per_deployment: dict[str, float]
    loop_busy: list[float]
    machine_cpu: dict[str, float]
    checks: Checks


def summarise_phase(
    processes: int,
    pids: Sequence[int | None],
    sent: EnqueueResult,
    rows: Sequence[asyncpg.Record],
    before: CpuSample,
    after: CpuSample,
    checks: Checks,
) -> PhaseResult:
    """Rates from the first Deploy call sent; claims per process from the attempts'
    `worker_id` (`host:pid:...`); CPU per succeeded deployment."""
    ok = [r for r in rows if r["status"] == SUCCEEDED]
    last_us = max((r["finished_us"] for r in ok), default=sent.started_us)
    elapsed_s = max(1e-6, (last_us - sent.started_us) / 1e6)
    claimed = [r for r in rows if r["started_us"] is not None]
    per_pid = Counter(str(r["worker_id"]).split(":")[1] for r in claimed)
    use = CpuUse.between(before, after, len(ok))
    return PhaseResult(
        processes=processes,
        deployments=len(sent.version_ids),
        enqueue_errors=sent.errors,
        first_enqueue_error=sent.first_error,
        enqueue_s=sent.elapsed_s,
        enqueue_per_s=len(sent.version_ids) / sent.elapsed_s if sent.elapsed_s else 0.0,
        elapsed_s=elapsed_s,
        deployments_per_s=len(ok) / elapsed_s,
        claim=Latency.of([r["started_us"] - r["created_us"] for r in claimed]),
        attempt=Latency.of(
            [
                r["attempt_finished_us"] - r["started_us"]
                for r in claimed
                if r["attempt_finished_us"] is not None
            ]
        ),
        end_to_end=Latency.of([r["finished_us"] - r["created_us"] for r in ok]),
        claims_per_process=[per_pid.get(str(pid), 0) for pid in pids],
        cpu_ms_per_deployment={
            "deployers": use.workers_ms,
            "chat": use.chat_ms,
            "postgres": use.postgres_ms,
            "client": use.client_ms,
        },
        loop_busy=use.loop_busy,
        machine_cpu=machine_shares(before.machine, after.machine),
        checks=checks,
    )
