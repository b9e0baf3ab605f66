"""CPU accounting from /proc: the deployers (in `noop` mode also procrastinate's worker
processes) and their main threads (the event loops), chat, every PostgreSQL process, this
client, and the machine's shares."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from harness import command_cpu_s, machine_ticks, pid_cpu_s


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by the deployers (and their event-loop threads), chat,
    PostgreSQL and this process; the machine's CPU time by kind, in clock ticks."""

    deployers_s: float
    loops_s: list[float]
    chat_s: float
    postgres_s: float
    client_s: float
    machine: list[int]
    wall_s: float


def cpu_sample(deployer_pids: Sequence[int | None], chat_pid: int | None) -> CpuSample:
    """CPU used so far (0 where /proc does not tell); PostgreSQL is the sum over every
    process named `postgres`. `deployer_pids`: the worker processes, procrastinate's too."""
    return CpuSample(
        deployers_s=sum(pid_cpu_s(pid) or 0.0 for pid in deployer_pids),
        loops_s=[pid_cpu_s(pid, main_thread=True) or 0.0 for pid in deployer_pids],
        chat_s=pid_cpu_s(chat_pid) or 0.0,
        postgres_s=command_cpu_s("postgres"),
        client_s=time.process_time(),
        machine=machine_ticks(),
        wall_s=time.perf_counter(),
    )


@dataclass(frozen=True, kw_only=True)
class CpuUse:
    """What was used between two samples: per job, in ms, and the event loops' shares."""

    workers_ms: float  # the deployers, or procrastinate's worker processes
    chat_ms: float
    postgres_ms: float
    client_ms: float
    loop_busy: list[float]  # each worker process's main thread, 1.0 = saturated

    @classmethod
    def between(cls, before: CpuSample, after: CpuSample, jobs: int) -> CpuUse:
        n = max(1, jobs)
        wall_s = max(1e-6, after.wall_s - before.wall_s)
        return cls(
            workers_ms=(after.deployers_s - before.deployers_s) * 1000 / n,
            chat_ms=(after.chat_s - before.chat_s) * 1000 / n,
            postgres_ms=(after.postgres_s - before.postgres_s) * 1000 / n,
            client_ms=(after.client_s - before.client_s) * 1000 / n,
            loop_busy=[
                (b - a) / wall_s for a, b in zip(before.loops_s, after.loops_s, strict=True)
            ],
        )
