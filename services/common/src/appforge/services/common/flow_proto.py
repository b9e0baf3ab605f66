"""The shared flow values (appforge.flow.v1) to and from protobuf, in one place for every
service: chat answers and publishes them, the builder streams and writes them."""

from __future__ import annotations

from appforge.api.flow.v1 import flow_pb2
from appforge.services.common.flow import FlowItem, ItemKind, ToolCall
from appforge.services.common.proto import timestamp


def call_to_proto(call: ToolCall) -> flow_pb2.ToolCall:
    """A tool call as clients see it."""
    out = flow_pb2.ToolCall(
        call_id=call.call_id,
        name=call.name,
        status=int(call.status),  # type: ignore[arg-type]
        arguments_json=call.arguments_json,
        result_json=call.result_json,
        error=call.error,
    )
    if call.deadline_us is not None:
        out.deadline.CopyFrom(timestamp(call.deadline_us))
    return out


def item_to_proto(item: FlowItem, execution_id: str) -> flow_pb2.FlowItem:
    """A flow item of `execution_id` as clients see it."""
    out = flow_pb2.FlowItem(execution_id=execution_id, seq=item.seq)
    if item.timestamp_us is not None:
        out.timestamp.CopyFrom(timestamp(item.timestamp_us))
    if item.kind is ItemKind.MESSAGE:
        out.message.text = item.text
        out.message.offset = item.text_offset
    else:
        out.tools.calls.extend(call_to_proto(c) for c in item.calls)
    return out
