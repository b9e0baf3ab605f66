"""One run's parameters, from the command line, and the targets it is held to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Token emitted by the model -> received by a watcher, over every (watcher, token) pair.
TARGET_P99_MS = 100.0
# `--quick`: a smoke test of the whole path in a few seconds.
QUICK = {"builds": 2, "watchers": 4, "tokens": 50}


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """One run's parameters, from the command line."""

    builds: int
    tokens: int
    tokens_per_s: float
    watchers: int
    watcher_procs: int
    flush_ms: float
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
    log_level: str
    logs: Path | None

    @property
    def stream_s(self) -> float:
        """How long one build's reply takes to stream at the offered pace."""
        return self.tokens / self.tokens_per_s

    @property
    def offered_per_s(self) -> float:
        return self.builds * self.tokens_per_s
