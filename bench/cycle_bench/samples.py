"""What one cycle measured (ms after its call of each event it got to), the statistics of a
duration, and the phases, timeline and intervals the report names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from harness import percentile

# (label, from event, to event): the phases each kind of cycle reports. "call" is 0 ms.
CYCLE_PHASES = (
    ("Build -> finished event", "call", "finished"),
    ("finished -> SUCCEEDED seen", "finished", "seen"),
    ("SUCCEEDED -> served", "seen", "served"),
)
BASELINE_PHASES = (
    ("Deploy call", "call", "replied"),
    ("reply -> SUCCEEDED seen", "replied", "seen"),
    ("SUCCEEDED -> served", "seen", "served"),
)
# Events in the order they usually happen, and what the timeline calls them.
TIMELINE = (
    ("started", "started event (builder)"),
    ("replied", "Deploy reply (baseline)"),
    ("queued", "deployment queued"),
    ("claimed", "attempt claimed"),
    ("published", "attempt finished (published)"),
    ("finished", "finished event (builder)"),
    ("seen", "SUCCEEDED seen (watch)"),
    ("served", "served (GET 200)"),
)
# Intervals worth naming, where both events exist.
INTERVALS = (
    ("builder before Deploy", "call", "queued"),
    ("claim wait (queued -> claimed)", "queued", "claimed"),
    ("attempt (claimed -> finished)", "claimed", "published"),
    ("builder after Deploy (queued -> finished)", "queued", "finished"),
    ("attempt finished -> SUCCEEDED seen", "published", "seen"),
)


@dataclass(kw_only=True)
class Sample:
    """One cycle: ms after the call of each event it got to, or the error that ended it."""

    events: dict[str, float] = field(default_factory=dict)
    error: str = ""
    items: int = 0
    get_tries: int = 0
    app_version_id: str = ""
    # Where the cycle is, and what it made: named when a cycle fails.
    stage: str = "CreateApp"
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and "served" in self.events


@dataclass(frozen=True, kw_only=True)
class Stat:
    """Percentiles of one duration, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 0.50),
            p95_ms=percentile(ordered, 0.95),
            max_ms=ordered[-1] if ordered else 0.0,
            mean_ms=sum(ordered) / len(ordered) if ordered else 0.0,
        )


def between(samples: Sequence[Sample], start: str, end: str) -> Stat:
    """From event `start` ("call": the call itself) to `end`, over the samples with both."""
    return Stat.of(
        [
            s.events[end] - s.events.get(start, 0.0)
            for s in samples
            if end in s.events and (start == "call" or start in s.events)
        ]
    )
