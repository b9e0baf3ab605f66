"""Flow types every service shares (appforge.flow.v1), as domain values."""

from __future__ import annotations

from dataclasses import dataclass
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


class ItemKind(IntEnum):
    """The body of a flow item."""

    MESSAGE = 1
    TOOLS = 2


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """One tool invocation, keyed by (execution_id, call_id)."""

    call_id: str
    name: str = ""
    status: ToolStatus = ToolStatus.PENDING
    arguments_json: str = ""
    result_json: str = ""
    error: str = ""
    deadline_us: int | None = None


@dataclass(frozen=True, kw_only=True)
class FlowItem:
    """One entry of an execution's flow: text, or a batch of tool calls.

    `text` starts at character `text_offset` of the item's text: 0 for a whole text, the
    length of what is already there for an append (flow.v1's TextPart.offset).
    """

    seq: int
    kind: ItemKind
    timestamp_us: int | None = None
    text: str = ""
    calls: tuple[ToolCall, ...] = ()
    text_offset: int = 0

    @property
    def text_end(self) -> int:
        """Where the text this item carries ends, in characters."""
        return self.text_offset + len(self.text)
