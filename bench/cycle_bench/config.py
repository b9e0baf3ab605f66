"""One run's parameters, from the command line, and the services it starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TARGET_P50_MS = 500.0
SERVICES = ("chat", "builder", "deployer")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    builds: int
    concurrency: int
    warmup: int
    prompt: str
    poll_interval: float
    workers: int
    log_level: str
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
    py_spy_service: str
    target_p50_ms: float
    workdir: Path | None
