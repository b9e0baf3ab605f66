"""Flow types every service shares (appforge.flow.v1), as domain values."""

from __future__ import annotations

from enum import IntEnum


class ToolStatus(IntEnum):
    """A tool call's state: pending → streaming → one terminal state (matches flow.v1)."""

    PENDING = 1
    STREAMING = 2
    SUCCEEDED = 3
    FAILED = 4
    TIMED_OUT = 5
    CANCELLED = 6

    @property
    def terminal(self) -> bool:
        return self >= ToolStatus.SUCCEEDED
