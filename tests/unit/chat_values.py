"""Chat domain values the chat unit-test modules build: flow items, tool calls, assistant
upserts, and the default limits they are checked against."""

from __future__ import annotations

from typing import Any

from appforge.services.chat.domain import AssistantUpsert, FlowItem, ItemKind, ToolCall, ToolStatus
from appforge.services.common.settings import Limits

S = ToolStatus
T0 = 1_700_000_000_000_000
LIMITS = Limits()
MAX_ID = LIMITS.max_id_length


def text(seq: int, body: str = "hi", stamp: int | None = None) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.MESSAGE, text=body, timestamp_us=stamp)


def piece(seq: int, body: str, offset: int) -> FlowItem:
    """A text piece appended at `offset` (as a delta or an append write carries it)."""
    return FlowItem(seq=seq, kind=ItemKind.MESSAGE, text=body, text_offset=offset)


def tools(seq: int, *calls: ToolCall, stamp: int | None = None) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.TOOLS, calls=calls, timestamp_us=stamp)


def call(call_id: str = "c1", status: ToolStatus = S.PENDING, **fields: Any) -> ToolCall:
    return ToolCall(call_id=call_id, status=status, **fields)


def upsert(**fields: Any) -> AssistantUpsert:
    return AssistantUpsert(**{"app_id": "app-1", "execution_id": "exec-1", **fields})
