"""CPU accounting from /proc: the services, the bench database's share of PostgreSQL, Redis,
the bench and its watchers, each main thread (the event loop), and the machine as a whole."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from harness import machine_shares, machine_ticks, pid_cpu_s, proc_stat, stat_cpu_s


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by each process of interest, and the machine's ticks."""

    processes: dict[str, float]
    threads: dict[str, float]
    machine: list[int]
    wall_s: float


def _postgres_cpu_s(postmaster: int | None, database: str) -> float:
    """The bench database's share of PostgreSQL: the postmaster, its auxiliary processes
    (WAL writer, checkpointer...) and the backends connected to `database`; not the
    backends of other databases (the server may be shared). A backend that exited during
    the window is not counted. Without a postmaster pid: every `postgres` process."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = proc_stat(stat)
        if found is None:
            continue
        command, fields = found
        pid = int(stat.parent.name)
        if postmaster is None:
            total += stat_cpu_s(fields) if command == "postgres" else 0.0
        elif pid == postmaster:
            total += stat_cpu_s(fields)
        elif int(fields[1]) == postmaster:
            try:
                title = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            backend = "(" in title  # "postgres: user database host(port) state"
            if not backend or f" {database} " in title:
                total += stat_cpu_s(fields)
    return total


def cpu_sample(
    pids: dict[str, list[int]], servers: dict[str, int | None], database: str
) -> CpuSample:
    """`pids`: label -> its pids (the watchers may be several processes); `servers`:
    PostgreSQL's postmaster and Redis's pid, when known; `database`: the bench's."""
    processes = {
        label: sum(pid_cpu_s(pid) or 0.0 for pid in group) for label, group in pids.items()
    }
    threads = {
        label: sum(pid_cpu_s(pid, main_thread=True) or 0.0 for pid in group)
        for label, group in pids.items()
    }
    processes["postgres"] = _postgres_cpu_s(servers.get("postgres"), database)
    processes["redis"] = pid_cpu_s(servers.get("redis")) or 0.0
    return CpuSample(
        processes=processes, threads=threads, machine=machine_ticks(), wall_s=time.monotonic()
    )


def cpu_usage(before: CpuSample, after: CpuSample) -> dict[str, Any]:
    """Cores used per process, main-thread (event loop) busy share, the machine's shares;
    `other`: the busy cores nobody listed accounts for (other work on the machine)."""
    wall = max(1e-6, after.wall_s - before.wall_s)
    machine = machine_shares(before.machine, after.machine)
    busy = machine["busy"]
    cores = {k: (after.processes[k] - before.processes[k]) / wall for k in after.processes}
    cores["other"] = max(0.0, busy * (os.cpu_count() or 1) - sum(cores.values()))
    return {
        "cores": cores,
        "loop_busy": {k: (after.threads[k] - before.threads[k]) / wall for k in after.threads},
        "machine": {key: machine[key] for key in ("busy", "iowait", "steal")},
    }


async def server_pids(conn: asyncpg.Connection, redis_url: str) -> dict[str, int | None]:
    """The postmaster of the bench's PostgreSQL and the pid of its Redis, if they are
    processes of this machine (not, say, in a container with its own pid namespace)."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    found = proc_stat(Path(f"/proc/{backend}/stat"))
    postmaster = int(found[1][1]) if found and found[0] == "postgres" else None
    client = aioredis.Redis.from_url(redis_url)
    try:
        pid = int((await client.info("server"))["process_id"])
    finally:
        await client.aclose()
    found = proc_stat(Path(f"/proc/{pid}/stat"))
    return {
        "postgres": postmaster,
        "redis": pid if found and found[0].startswith("redis-server") else None,
    }
