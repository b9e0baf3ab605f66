"""CPU accounting from /proc: each service and its main thread (the event loop), the
PostgreSQL backends of the bench database, Redis, this client, and the machine."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from harness import machine_shares, machine_ticks, pid_cpu_s, proc_stat, stat_cpu_s


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by each service (and its main thread), by the PostgreSQL
    backends of the bench database (by pid), by every redis-server process and by this
    client; the machine's CPU ticks by kind."""

    processes: dict[str, float]
    loops: dict[str, float]
    backends: dict[int, float]
    redis: dict[int, float]
    machine: list[int]
    wall_s: float


BACKENDS_SQL = """
SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


async def cpu_sample(pids: dict[str, int | None], conn: asyncpg.Connection) -> CpuSample:
    """CPU used so far. PostgreSQL: only the backends serving the bench database (the
    server may be shared); a backend that exits before the second sample is not counted."""
    backends = [int(row["pid"]) for row in await conn.fetch(BACKENDS_SQL)]
    redis: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = proc_stat(stat)
        if found is not None and found[0] == "redis-server":
            redis[int(stat.parent.name)] = stat_cpu_s(found[1])
    processes = {name: pid_cpu_s(pid) or 0.0 for name, pid in pids.items() if pid}
    processes["client"] = time.process_time()
    loops = {name: pid_cpu_s(pid, main_thread=True) or 0.0 for name, pid in pids.items() if pid}
    return CpuSample(
        processes=processes,
        loops=loops,
        backends={pid: pid_cpu_s(pid) or 0.0 for pid in backends},
        redis=redis,
        machine=machine_ticks(),
        wall_s=time.perf_counter(),
    )


def cpu_usage(before: CpuSample, after: CpuSample, cycles: int) -> dict[str, Any]:
    """CPU ms per cycle of each process, event-loop busy shares, the machine's CPU shares
    (`other`: busy time none of the measured processes account for: other work on the box)."""
    wall_s = max(1e-6, after.wall_s - before.wall_s)
    used = {
        name: after.processes[name] - before.processes.get(name, 0.0) for name in after.processes
    }
    used["postgres"] = sum(
        cpu - before.backends.get(pid, 0.0) for pid, cpu in after.backends.items()
    )
    # Every redis-server process that ran through the phase (the server may be shared).
    used["redis"] = sum(
        cpu - before.redis[pid] for pid, cpu in after.redis.items() if pid in before.redis
    )
    machine = machine_shares(before.machine, after.machine)
    busy = machine["busy"]
    ours = sum(used.values()) / (wall_s * (os.cpu_count() or 1))
    n = max(1, cycles)
    return {
        "ms_per_cycle": {name: seconds * 1000 / n for name, seconds in used.items()},
        "pg_backends": len(after.backends),
        "loop_busy": {
            name: (after.loops[name] - before.loops.get(name, 0.0)) / wall_s for name in after.loops
        },
        "machine": {
            "busy": busy,
            "other": max(0.0, busy - ours),
            "iowait": machine["iowait"],
            "steal": machine["steal"],
            "idle": machine["idle"],
        },
    }
