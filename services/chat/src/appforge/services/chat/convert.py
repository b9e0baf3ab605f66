"""Protobuf <-> chat domain. The only chat module besides grpc_api that knows protobuf."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.chat.domain import (
    App,
    AssistantUpsert,
    FlowItem,
    ItemKind,
    Message,
    MessageStatus,
    Role,
    ToolCall,
    ToolStatus,
)
from appforge.services.chat.validation import (
    json_safe,
)
from appforge.services.common.errors import InvalidArgument
from appforge.services.common.flow_proto import call_to_proto as call_to_proto
from appforge.services.common.flow_proto import item_to_proto as item_to_proto
from appforge.services.common.proto import struct, timestamp


def app_to_proto(app: App) -> chat_pb2.App:
    return chat_pb2.App(
        id=app.id, team_id=app.team_id, name=app.name, created_at=timestamp(app.created_us)
    )


def message_to_proto(message: Message) -> chat_pb2.ChatMessage:
    execution_id = message.execution_id or ""
    return chat_pb2.ChatMessage(
        id=message.id,
        app_id=message.app_id,
        role=int(message.role),  # type: ignore[arg-type]
        execution_id=execution_id,
        content=message.content,
        status=int(message.status),  # type: ignore[arg-type]
        metadata=struct(message.metadata),
        flow=[item_to_proto(i, execution_id) for i in message.flow],
        version=message.version,
        created_at=timestamp(message.created_us),
        updated_at=timestamp(message.updated_us),
        request_id=message.request_id or "",
        cursor=message.cursor,
    )


def message_from_proto(proto: chat_pb2.ChatMessage) -> Message:
    """The inverse of `message_to_proto` (the bus carries messages as protobuf)."""
    return Message(
        id=proto.id,
        app_id=proto.app_id,
        role=Role(proto.role),
        execution_id=proto.execution_id or None,
        content=proto.content,
        status=MessageStatus(proto.status),
        metadata=json_format.MessageToDict(proto.metadata),
        flow=tuple(_item_from_proto(i, f"flow[{n}]") for n, i in enumerate(proto.flow)),
        version=proto.version,
        created_us=proto.created_at.ToMicroseconds(),
        updated_us=proto.updated_at.ToMicroseconds(),
        request_id=proto.request_id or None,
        cursor=proto.cursor,
    )


def _status(value: int, enum: type[ToolStatus] | type[MessageStatus], field: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise InvalidArgument(f"unknown value {value}", field=field) from None


def _call_from_proto(call: flow_pb2.ToolCall, where: str) -> ToolCall:
    status = (
        ToolStatus.PENDING
        if call.status == flow_pb2.TOOL_STATUS_UNSPECIFIED
        else _status(call.status, ToolStatus, f"{where}.status")
    )
    return ToolCall(
        call_id=call.call_id,
        name=call.name,
        status=status,
        arguments_json=call.arguments_json,
        result_json=call.result_json,
        error=call.error,
        deadline_us=call.deadline.ToMicroseconds() if call.HasField("deadline") else None,
    )


def _item_from_proto(item: flow_pb2.FlowItem, where: str) -> FlowItem:
    body = item.WhichOneof("body")
    if body is None:
        raise InvalidArgument("must have a body: message or tools", field=where)
    stamp = item.timestamp.ToMicroseconds() if item.HasField("timestamp") else None
    if body == "message":
        return FlowItem(
            seq=item.seq, kind=ItemKind.MESSAGE, timestamp_us=stamp, text=item.message.text
        )
    calls = tuple(
        _call_from_proto(c, f"{where}.tools.calls[{n}]") for n, c in enumerate(item.tools.calls)
    )
    return FlowItem(seq=item.seq, kind=ItemKind.TOOLS, timestamp_us=stamp, calls=calls)


def _metadata(request: chat_pb2.UpsertAssistantMessageRequest) -> dict[str, Any]:
    try:
        values = json_format.MessageToDict(request.metadata)
    except ValueError:  # NaN and infinities cannot be JSON
        raise InvalidArgument("numbers must be finite", field="metadata") from None
    result: dict[str, Any] = json_safe(values)
    return result


def upsert_from_proto(request: chat_pb2.UpsertAssistantMessageRequest) -> AssistantUpsert:
    """A request as a domain upsert; structural problems raise InvalidArgument."""
    items = []
    for n, item in enumerate(request.items):
        where = f"items[{n}]"
        if item.execution_id and item.execution_id != request.execution_id:
            raise InvalidArgument(
                "names another execution than the request", field=f"{where}.execution_id"
            )
        items.append(_item_from_proto(item, where))
    status = (
        None
        if request.status == chat_pb2.MESSAGE_STATUS_UNSPECIFIED
        else _status(request.status, MessageStatus, "status")
    )
    metadata = _metadata(request) if request.HasField("metadata") else {}
    return AssistantUpsert(
        app_id=request.app_id,
        execution_id=request.execution_id,
        items=tuple(items),
        status=status,
        metadata=metadata,
    )
