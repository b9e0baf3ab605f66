"""One phase: warm up, measure a window (CPU, the change bus, py-spy), stop, and drain the
executions, deployments and notices still in flight."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from harness import BenchError, Child, PySpy, log

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.api.deployer.v1 import deployer_pb2
from appforge.api.flow.v1 import flow_pb2

from .bus import BusMonitor
from .config import BenchConfig
from .cpu import CpuSample, cpu_sample, cpu_usage
from .latency import now_us
from .load import Pacer, Phase, Tally, Window
from .model import FakeModel
from .watchers import WatcherPool

DRAIN_TIMEOUT_S = 90.0
STUCK_AFTER_S = 5.0  # a Build stream not finished this long after its execution ended
QUIET_S = 1.0  # after a phase drained, before the next one starts
PROGRESS_S = 5.0

DEPLOYS_PENDING_SQL = """
SELECT (SELECT count(*) FROM deploy_deployments WHERE NOT (status = ANY($1::smallint[])))
     + (SELECT count(*) FROM deploy_outbox WHERE delivered_us IS NULL)
"""
TERMINAL = [
    deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED,
    deployer_pb2.DEPLOYMENT_STATUS_FAILED,
    deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT,
    deployer_pb2.DEPLOYMENT_STATUS_CANCELLED,
]


@dataclass(kw_only=True)
class Services:
    """The running processes and the bench's connections to them."""

    children: dict[str, Child]
    watchers: WatcherPool
    chat: Any
    builder: Any
    conn: asyncpg.Connection
    fake: FakeModel
    servers: dict[str, int | None]
    database: str
    bus: BusMonitor

    def cpu(self) -> CpuSample:
        return cpu_sample(self.pids(), self.servers, self.database)

    def pids(self) -> dict[str, list[int]]:
        out = {name: [c.pid] for name, c in self.children.items() if c.pid is not None}
        out["bench"] = [os.getpid()]
        out["watchers"] = self.watchers.pids
        return out

    def check_alive(self) -> None:
        for child in self.children.values():
            if child.proc is not None and child.proc.returncode is not None:
                raise BenchError(f"{child.name} exited with {child.proc.returncode}")
        self.watchers.check_alive()


@dataclass(kw_only=True)
class PhaseRun:
    """A finished phase: its window, its tally, the CPU it used, what the bus saw."""

    name: str
    window: Window
    tally: Tally
    cpu: dict[str, Any]
    bus: dict[str, int]
    builds_started: int
    stuck: list[str]


async def _sleep_watching(services: Services, seconds: float, tally: Tally, name: str) -> None:
    """Sleep, checking the processes are alive and logging the produced rate."""
    deadline = time.monotonic() + seconds
    mark, mark_t = tally.new_total, time.monotonic()
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, PROGRESS_S))
        services.check_alive()
        now = time.monotonic()
        if now - mark_t >= 1:
            ended = sum(tally.statuses.values())
            log(
                f"{name}: {(tally.new_total - mark) / (now - mark_t):.0f} new items/s, "
                f"{ended} executions ended, {sum(tally.errors.values())} errors"
            )
            mark, mark_t = tally.new_total, now


async def describe_execution(services: Services, execution_id: str) -> tuple[bool, str]:
    """Whether the execution ended in the builder's store more than STUCK_AFTER_S ago, and
    what the builder and chat say about it."""
    try:
        execution = await services.builder.GetExecution(
            builder_pb2.GetExecutionRequest(execution_id=execution_id), timeout=10
        )
        message = await services.chat.GetMessageByExecution(
            chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        return False, f"{execution_id}: {exc.code().name} {exc.details()}"
    calls = Counter(flow_pb2.ToolStatus.Name(c.status) for c in execution.tool_calls)
    ended_us = execution.finished_at.ToMicroseconds() if execution.HasField("finished_at") else 0
    ended = ended_us > 0 and now_us() - ended_us > STUCK_AFTER_S * 1_000_000
    age = f"{(now_us() - ended_us) / 1e6:.0f}s ago" if ended_us else "not ended"
    return ended, (
        f"{execution_id}: {builder_pb2.ExecutionStatus.Name(execution.status)} ({age}), "
        f"last_seq {execution.last_seq}, calls {dict(calls)}, error {execution.error!r}; "
        f"chat message {chat_pb2.MessageStatus.Name(message.status)} with "
        f"{len(message.flow)} items"
    )


async def drain(name: str, services: Services, phase: Phase, workers: list[Any]) -> list[str]:
    """Wait for the executions in flight to end; the Build streams given up on.

    A Build stream whose execution ended in the builder's store more than STUCK_AFTER_S
    ago without the stream saying `finished` will not say it any more: it is cancelled and
    reported (what the service did), not counted as the bench failing. Anything else still
    running DRAIN_TIMEOUT_S after the stop fails the bench.
    """
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    stuck: list[str] = []
    pending = set(workers)
    while pending:
        done, pending = await asyncio.wait(pending, timeout=STUCK_AFTER_S)
        for task in done:
            if not task.cancelled():
                task.result()
        for worker, execution_id in list(phase.running.items()):
            ended, description = await describe_execution(services, execution_id)
            if ended and workers[worker] in pending:
                log(f"{name}: Build stream never finished: {description}")
                stuck.append(description)
                phase.running.pop(worker, None)
                workers[worker].cancel()
        if pending and time.monotonic() > deadline:
            described = [(await describe_execution(services, e))[1] for e in phase.running.values()]
            raise BenchError(
                f"{name}: {len(pending)} executions did not end {DRAIN_TIMEOUT_S:.0f}s after "
                "the phase:\n  " + "\n  ".join(described or ["(no execution id known)"])
            )
    return stuck


async def _drain_deploys(conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while await conn.fetchval(DEPLOYS_PENDING_SQL, TERMINAL):
        if time.monotonic() > deadline:
            raise BenchError(f"deployments still pending {DRAIN_TIMEOUT_S:.0f}s after the phase")
        await asyncio.sleep(0.1)


async def measure_window(
    name: str, services: Services, config: BenchConfig, tally: Tally
) -> tuple[dict[str, Any], dict[str, int]]:
    """The measured window: its CPU use and what the change bus carried (and, with
    --py-spy, a profile of chat and of the builder during the builder's window)."""
    spies = []
    if config.py_spy is not None and name == "builder":
        for label in ("chat", "builder"):
            pid = services.children[label].pid
            if pid is not None:
                spies.append(PySpy(config.py_spy / f"{label}.txt", pid))
                await spies[-1].start()
    try:
        bus_before = Counter(services.bus.counts)
        before = services.cpu()
        tally.window.start_us = now_us()
        await _sleep_watching(services, config.duration, tally, name)
        tally.window.end_us = now_us()
        after = services.cpu()
        bus = Counter(services.bus.counts)
        bus.subtract(bus_before)
    finally:
        for spy in spies:
            await spy.stop()
    return cpu_usage(before, after), dict(bus)


async def run_phase(
    name: str,
    services: Services,
    config: BenchConfig,
    apps: list[str],
    worker: Callable[[Phase, int], Coroutine[Any, Any, None]],
) -> PhaseRun:
    """Warm up, measure `config.duration` seconds, then stop and drain."""
    window = Window()
    tally = Tally(window=window)
    phase = Phase(config=config, apps=apps, tally=tally, pacer=Pacer(config.rate))
    services.fake.pacer = phase.pacer
    services.fake.stopping = False
    log(f"{name}: {config.builds} executions in flight, warming up for {config.warmup:g}s")
    workers = [asyncio.create_task(worker(phase, n)) for n in range(config.builds)]
    try:
        await _sleep_watching(services, config.warmup, tally, name)
        cpu, bus = await measure_window(name, services, config, tally)
        started = tally.started
        phase.stopping = services.fake.stopping = True
        log(f"{name}: measured; letting the executions in flight end")
        stuck = await drain(name, services, phase, workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        services.fake.pacer = None
    await _drain_deploys(services.conn)
    await asyncio.sleep(QUIET_S)
    return PhaseRun(
        name=name,
        window=window,
        tally=tally,
        cpu=cpu,
        bus=bus,
        builds_started=started,
        stuck=stuck,
    )
