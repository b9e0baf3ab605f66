"""One run's parameters, from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    deployments: int
    files: int
    workers: int
    concurrency: int
    poll_interval: float
    seed: int
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
