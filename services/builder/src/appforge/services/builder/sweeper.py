"""The sweeper every builder replica runs: nothing stays in flight forever.

Each sweep moves tool calls past their stored deadline to TIMED_OUT (ending their
executions), fails executions whose builder stopped heartbeating (it was killed), and
delivers the final notices chat has not acknowledged. Every step is safe with any number
of replicas sweeping at once: rows are claimed with SKIP LOCKED and only move forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from appforge.services.builder.metrics import (
    ABANDONED_EXECUTIONS,
    EXECUTIONS,
    TOOL_TIMEOUTS_REAPED,
)
from appforge.services.builder.notices import FinalNotices
from appforge.services.builder.store import ExecutionStore
from appforge.services.common.clock import Clock
from appforge.services.common.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class SweepReport:
    """What one sweep did."""

    timed_out: frozenset[str] = frozenset()  # executions ended by a call's deadline
    abandoned: frozenset[str] = frozenset()  # executions whose builder stopped
    notices_delivered: int = 0


def abandoned_reason(lease: float) -> str:
    return f"the builder running it stopped (no heartbeat for {lease:g} s)"


class Sweeper:
    """Sweeps every `interval` seconds; `ended(execution_id)` stops a local runner."""

    def __init__(
        self,
        store: ExecutionStore,
        notices: FinalNotices,
        clock: Clock,
        *,
        interval: float,
        lease: float,
        ended: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.notices = notices
        self.clock = clock
        self.interval = interval
        self.lease = lease
        self.ended = ended

    async def sweep_once(self) -> SweepReport:
        now = self.clock.now_us()
        timed_out = await self.store.time_out_expired_calls(now)
        abandoned = await self.store.fail_abandoned(
            now,
            stale_before_us=now - round(self.lease * 1_000_000),
            error=abandoned_reason(self.lease),
        )
        # Their notices are due now: deliver, then stop any local runner of theirs, so
        # that its Build clients see the final states before `finished`.
        delivered = await self.notices.deliver_due()
        report = SweepReport(
            timed_out=frozenset(c.execution_id for c in timed_out),
            abandoned=frozenset(abandoned),
            notices_delivered=delivered,
        )
        TOOL_TIMEOUTS_REAPED.inc(len(timed_out))
        ABANDONED_EXECUTIONS.inc(len(abandoned))
        EXECUTIONS.labels("timed_out").inc(len(report.timed_out))
        EXECUTIONS.labels("failed").inc(len(report.abandoned))
        for execution_id in report.timed_out | report.abandoned:
            self.ended(execution_id)
        if timed_out or abandoned:
            log.warning(
                "sweep",
                timed_out_calls=len(timed_out),
                timed_out_executions=",".join(sorted(report.timed_out)),
                abandoned_executions=",".join(sorted(report.abandoned)),
                notices_delivered=delivered,
            )
        return report

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:  # a database blip: sweep again next time
                log.exception("sweep_failed")
            await asyncio.sleep(self.interval)
