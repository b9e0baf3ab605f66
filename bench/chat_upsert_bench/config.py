"""One run's parameters, from the command line, and the targets it is held to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TARGET_RATIO = 0.6
TARGET_P99_MS = 30.0


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    calls: int
    executions: int
    concurrency: int
    warmup: int
    apps: int
    replay_ratio: float
    seed: int
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
    auth: bool = False  # the service checks tokens; every call carries one
