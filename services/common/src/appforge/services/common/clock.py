"""Clocks: the wall clock behind a protocol, and the hybrid clock that orders flow items.

The hybrid clock hands out microsecond stamps `max(now_us, last_us + 1)`: strictly
increasing even when the wall clock stalls or steps back, and never further ahead of the
wall clock than the number of stamps taken within one tick.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current wall-clock time in microseconds since the epoch."""

    def now_us(self) -> int: ...


class SystemClock:
    """The real wall clock."""

    def now_us(self) -> int:
        return time.time_ns() // 1_000


class FrozenClock:
    """A clock that says what it is told; tests move it by hand."""

    def __init__(self, now_us: int = 1_700_000_000_000_000) -> None:
        self._now_us = now_us

    def now_us(self) -> int:
        return self._now_us

    def set(self, now_us: int) -> None:
        self._now_us = now_us

    def advance(self, micros: int) -> None:
        self._now_us += micros


class HybridClock:
    """Strictly increasing microsecond stamps from a possibly misbehaving wall clock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._last_us = 0
        self._lock = threading.Lock()

    def tick(self, after_us: int = 0) -> int:
        """A stamp later than every stamp this clock gave before and later than `after_us`.

        `after_us` lets a caller resume an ordering persisted elsewhere (the last stamp of
        an execution, read back after a restart).
        """
        with self._lock:
            stamp = max(self._clock.now_us(), self._last_us + 1, after_us + 1)
            self._last_us = stamp
            return stamp

    def now_us(self) -> int:
        """The underlying wall clock, for deadlines rather than ordering."""
        return self._clock.now_us()
