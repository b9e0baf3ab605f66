"""The upserts of the measured execution: call n adds item n, a text of `item_bytes` bytes.

The first call also sets PROCESSING and a metadata key, the last one COMPLETED. With
`tools_every` > 0, every such call (but the last) adds a tools item with one PENDING call
instead of a text, and the call after it moves that call to SUCCEEDED beside its own new
item: still one new item per call.
"""

from __future__ import annotations

import json
from typing import TypeAlias

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2

Request: TypeAlias = chat_pb2.UpsertAssistantMessageRequest

_FILLER = "The signup form validates the e-mail field before it posts. "


def item_text(seq: int, size: int) -> str:
    """`size` ASCII characters (so as many bytes), different for every seq."""
    head = f"[{seq}] "
    body = (_FILLER * (size // len(_FILLER) + 1))[: max(0, size - len(head))]
    return (head + body)[:size]


def _tool_call(seq: int, status: int) -> flow_pb2.ToolCall:
    done = status == flow_pb2.TOOL_STATUS_SUCCEEDED
    return flow_pb2.ToolCall(
        call_id=f"call-{seq}",
        name="read_file",
        status=status,  # type: ignore[arg-type]
        arguments_json=json.dumps({"path": f"src/pages/page_{seq}.tsx"}),
        result_json=json.dumps({"bytes": 1834, "lines": 61}) if done else "",
    )


def _tools_item(seq: int, status: int) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, tools=flow_pb2.ToolBatch(calls=[_tool_call(seq, status)]))


def growth_requests(
    app_id: str, execution_id: str, *, items: int, item_bytes: int, tools_every: int = 0
) -> list[Request]:
    """The `items` requests of one execution, in the order they are sent."""

    def is_tools(seq: int) -> bool:
        return tools_every > 0 and 0 < seq < items and seq % tools_every == 0

    requests = []
    for seq in range(1, items + 1):
        request = Request(app_id=app_id, execution_id=execution_id)
        if is_tools(seq - 1):
            request.items.append(_tools_item(seq - 1, flow_pb2.TOOL_STATUS_SUCCEEDED))
        if is_tools(seq):
            request.items.append(_tools_item(seq, flow_pb2.TOOL_STATUS_PENDING))
        else:
            text = flow_pb2.TextPart(text=item_text(seq, item_bytes))
            request.items.append(flow_pb2.FlowItem(seq=seq, message=text))
        if seq == 1:
            request.status = chat_pb2.MESSAGE_STATUS_PROCESSING
            request.metadata.update({"model": "bench"})
        if seq == items:
            request.status = chat_pb2.MESSAGE_STATUS_COMPLETED
        requests.append(request)
    return requests
