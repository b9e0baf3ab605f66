"""One run's parameters, from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    rate: float
    duration: float
    warmup: float
    watchers: int
    apps: int
    builds: int
    turns: int
    calls_per_turn: int
    watcher_procs: int
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
    log_level: str
    logs: Path | None

    @property
    def items_per_build(self) -> int:
        """On average: two per turn with tools, one for the last turn."""
        return 2 * (self.turns - 1) + 1

    @property
    def max_turns(self) -> int:
        return max(2, 2 * self.turns - 2)
