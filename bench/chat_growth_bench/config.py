"""One run's parameters, from the command line, and the targets it is held to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# p50 of the last window of calls over p50 of the first: a write costs what it changes.
TARGET_LATENCY_RATIO = 1.2
# Bytes the watcher received for the whole execution over the final message's size.
TARGET_BYTES_RATIO = 3.0
# The view the targets are set for; `--view full` shows the old cost, unjudged.
TARGET_VIEW = "basic"
VIEWS = ("basic", "full")


@dataclass(frozen=True, kw_only=True)
class GrowthConfig:
    """One run's parameters, from the command line."""

    items: int
    item_bytes: int
    window: int
    tools_every: int
    warmup: int
    view: str
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
