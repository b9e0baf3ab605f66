"""The measured stream: from just before the first token is due until every token has
reached the Build streams (and a moment more for the watchers), with CPU sampled at both
ends and, with `--py-spy`, chat and the builder profiled in between.

Nothing else runs in that window: the builds' start-up and tool work came before it (the
endpoint holds every reply until all builds asked for one) and their completion and
deploy come after it (the endpoint holds the replies' ends).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from builder_bench.cpu import CpuSample, cpu_sample, cpu_usage
from builder_bench.latency import now_us
from builder_bench.watchers import WatcherPool
from harness import BenchError, Child, PySpy, log

from .builds import BuildTally
from .config import StreamConfig
from .endpoint import TokenEndpoint

ARRIVE_TIMEOUT_S = 120.0  # for every build to reach its reply
STREAM_SLACK_S = 30.0  # past the offered streaming time, before giving up on the stream
BUILD_STREAM_GRACE_S = 5.0  # after the last token emitted, for the Build streams
SETTLE_S = 0.5  # after the Build streams got every token: the watchers' last deliveries
PROGRESS_S = 2.0
CHECK_S = 0.05


@dataclass(kw_only=True)
class Processes:
    """The processes whose CPU counts, and the PostgreSQL and Redis servers'."""

    children: dict[str, Child]
    watchers: WatcherPool
    servers: dict[str, int | None]
    database: str

    def sample(self) -> CpuSample:
        pids = {name: [c.pid] for name, c in self.children.items() if c.pid is not None}
        pids["bench"] = [os.getpid()]
        pids["watchers"] = self.watchers.pids
        return cpu_sample(pids, self.servers, self.database)

    def check_alive(self) -> None:
        for child in self.children.values():
            if child.proc is not None and child.proc.returncode is not None:
                raise BenchError(f"{child.name} exited with {child.proc.returncode}")
        self.watchers.check_alive()


@dataclass(frozen=True, kw_only=True)
class Window:
    """The measured stream: when, its CPU, what was emitted and streamed in it."""

    start_us: int
    end_us: int
    cpu: dict[str, Any]
    cpu_s: dict[str, float]  # CPU seconds per process in the window
    emitted: dict[int, int]  # build number -> tokens
    first_emit_us: int
    last_emit_us: int
    build_tokens: int
    build_pieces: int
    build_stream_complete: bool


async def wait_arrived(endpoint: TokenEndpoint, tally: BuildTally, processes: Processes) -> None:
    """Until every build asked for its reply; fails if one ended or it takes too long."""
    deadline = time.monotonic() + ARRIVE_TIMEOUT_S
    builds = endpoint.config.builds
    while not endpoint.arrived.is_set():
        processes.check_alive()
        if sum(tally.statuses.values()) or tally.errors:
            ended = tally.first_error or dict(tally.statuses)
            raise BenchError(f"a build ended before its reply: {ended}")
        if time.monotonic() > deadline:
            raise BenchError(f"{endpoint.waiting} of {builds} builds reached their reply")
        await asyncio.sleep(CHECK_S)


async def _until_streamed(
    config: StreamConfig, endpoint: TokenEndpoint, tally: BuildTally, processes: Processes
) -> bool:
    """Until the Build streams have every token (True) or gave up (False)."""
    expected = config.builds * config.tokens
    deadline = time.monotonic() + config.stream_s + STREAM_SLACK_S
    emitted_at = 0.0
    mark, mark_t = 0, time.monotonic()
    while tally.tokens < expected:
        await asyncio.sleep(CHECK_S)
        processes.check_alive()
        now = time.monotonic()
        if endpoint.total_emitted >= expected:
            emitted_at = emitted_at or now
            if now - emitted_at > BUILD_STREAM_GRACE_S:
                break
        if now > deadline or (tally.errors and not tally.running):
            break
        if now - mark_t >= PROGRESS_S:
            rate = (endpoint.total_emitted - mark) / (now - mark_t)
            log(
                f"{endpoint.total_emitted:,} tokens emitted ({rate:,.0f}/s), "
                f"{tally.tokens:,} on the Build streams, {sum(tally.errors.values())} errors"
            )
            mark, mark_t = endpoint.total_emitted, now
    return tally.tokens >= expected


async def measure_stream(
    config: StreamConfig, endpoint: TokenEndpoint, tally: BuildTally, processes: Processes
) -> Window:
    """Start the replies and measure them until they streamed; then let them end."""
    spies = []
    if config.py_spy is not None:
        for label in ("chat", "builder"):
            pid = processes.children[label].pid
            if pid is not None:
                spies.append(PySpy(config.py_spy / f"{label}.txt", pid))
                await spies[-1].start()
    try:
        before = processes.sample()
        start_us = now_us()
        endpoint.start()
        log(f"streaming: {config.builds} replies of {config.tokens} tokens")
        complete = await _until_streamed(config, endpoint, tally, processes)
        await asyncio.sleep(SETTLE_S)
        end_us = now_us()
        after = processes.sample()
        tokens, pieces = tally.tokens, tally.pieces
    finally:
        for spy in spies:
            await spy.stop()
    endpoint.release.set()
    return Window(
        start_us=start_us,
        end_us=end_us,
        cpu=cpu_usage(before, after),
        cpu_s={k: after.processes[k] - v for k, v in before.processes.items()},
        emitted=dict(endpoint.emitted),
        first_emit_us=endpoint.first_emit_us,
        last_emit_us=endpoint.last_emit_us,
        build_tokens=tokens,
        build_pieces=pieces,
        build_stream_complete=complete,
    )
