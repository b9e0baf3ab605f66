"""CPU accounting from /proc: the server process, every PostgreSQL process, this client."""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness import command_cpu_s, pid_cpu_s


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by the server, the PostgreSQL processes and this process."""

    server_s: float
    postgres_s: float
    client_s: float


def cpu_sample(server_pid: int | None) -> CpuSample:
    """CPU used so far; the server is -1 where /proc does not tell."""
    server = pid_cpu_s(server_pid)
    return CpuSample(
        server_s=-1.0 if server is None else server,
        postgres_s=command_cpu_s("postgres"),
        client_s=time.process_time(),
    )
