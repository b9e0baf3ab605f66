"""CPU and memory from /proc: chat, the PostgreSQL backends of the bench database, the
watcher process, this client; the machine's CPU shares."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cycle_bench.cpu import BACKENDS_SQL
from harness import machine_shares, machine_ticks, pid_cpu_s


@dataclass(frozen=True, kw_only=True)
class Sample:
    """CPU seconds used so far by chat, by each backend of the bench database (by pid), by
    the watcher process and by this client; the machine's CPU ticks by kind, and when."""

    chat_s: float | None
    backends: dict[int, float]
    watcher_s: float
    client_s: float
    machine: list[int]
    wall_s: float

    def postgres_s(self, before: Sample) -> float:
        """Backend CPU since `before` (a backend that exits between the two is not counted;
        chat's pools keep theirs open)."""
        return sum(cpu - before.backends.get(pid, 0.0) for pid, cpu in self.backends.items())


class Probe:
    """Takes `Sample`s of chat (`chat_pid`), the watcher (`watcher_pid`), and the backends
    `conn`'s database has (the server may be shared: only this database's count)."""

    def __init__(self, conn: asyncpg.Connection, chat_pid: int | None) -> None:
        self.conn = conn
        self.chat_pid = chat_pid
        self.watcher_pid: int | None = None

    async def sample(self) -> Sample:
        backends = [int(row["pid"]) for row in await self.conn.fetch(BACKENDS_SQL)]
        return Sample(
            chat_s=pid_cpu_s(self.chat_pid),
            backends={pid: pid_cpu_s(pid) or 0.0 for pid in backends},
            watcher_s=pid_cpu_s(self.watcher_pid) or 0.0,
            client_s=time.process_time(),
            machine=machine_ticks(),
            wall_s=time.perf_counter(),
        )


def cpu_ms_per_call(before: Sample, after: Sample, calls: int) -> dict[str, float | None]:
    """CPU ms per call between two samples, by process (None where /proc did not tell)."""
    n = max(1, calls)
    chat = None
    if before.chat_s is not None and after.chat_s is not None:
        chat = (after.chat_s - before.chat_s) * 1000 / n
    return {
        "chat": chat,
        "postgres": after.postgres_s(before) * 1000 / n,
        "watcher": (after.watcher_s - before.watcher_s) * 1000 / n,
        "client": (after.client_s - before.client_s) * 1000 / n,
    }


def machine_use(before: Sample, after: Sample) -> dict[str, float]:
    """The machine's busy, iowait, steal and idle shares between two samples, and `other`:
    the busy share that chat, its backends, the watcher and this client do not account for
    (Redis, PostgreSQL's own processes, and whatever else runs on the machine)."""
    shares = machine_shares(before.machine, after.machine)
    wall_s = max(1e-6, after.wall_s - before.wall_s)
    used = cpu_ms_per_call(before, after, 1)
    ours = sum(value for value in used.values() if value is not None) / 1000
    other = max(0.0, shares["busy"] - ours / (wall_s * (os.cpu_count() or 1)))
    return {**shares, "other": other}


def memory_mb(pid: int | None) -> dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) MiB of a process, from /proc."""
    found: dict[str, float] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines() if pid else []
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
    return found
