"""Protobuf <-> chat domain. The only chat module besides grpc_api that knows protobuf.

It also carries changes on the bus (`ProtoChangeCodec`): as the serialised
`chat.v1.MessageEvent` BASIC watchers are sent, so that relaying a change costs neither a
conversion nor a serialisation, however many watchers there are.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import json_format

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.chat.domain import (
    App,
    AssistantUpsert,
    Change,
    DeltaChanged,
    FlowItem,
    ItemKind,
    Message,
    MessageChanged,
    MessageDelta,
    MessageStatus,
    MessageView,
    Role,
    ToolCall,
    ToolStatus,
)
from appforge.services.common.errors import InvalidArgument
from appforge.services.common.flow_proto import item_to_proto
from appforge.services.common.logging import get_logger
from appforge.services.common.proto import struct, timestamp

log = get_logger(__name__)


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


def delta_to_proto(delta: MessageDelta) -> chat_pb2.MessageDelta:
    out = chat_pb2.MessageDelta(
        message_id=delta.message_id,
        execution_id=delta.execution_id,
        version=delta.version,
        items=[item_to_proto(i, delta.execution_id) for i in delta.items],
        status=0 if delta.status is None else int(delta.status),  # type: ignore[arg-type]
        updated_at=timestamp(delta.updated_us),
    )
    if delta.metadata:
        out.metadata.CopyFrom(struct(delta.metadata))
    return out


def view_from_proto(view: int, field: str = "view") -> MessageView:
    """A request's view; UNSPECIFIED is BASIC."""
    if view == chat_pb2.MESSAGE_VIEW_UNSPECIFIED:
        return MessageView.BASIC
    try:
        return MessageView(view)
    except ValueError:
        raise InvalidArgument(f"unknown value {view}", field=field) from None


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
        if item.message.offset < 0:
            raise InvalidArgument("must not be negative", field=f"{where}.message.offset")
        return FlowItem(
            seq=item.seq,
            kind=ItemKind.MESSAGE,
            timestamp_us=stamp,
            text=item.message.text,
            text_offset=item.message.offset,
        )
    calls = tuple(
        _call_from_proto(c, f"{where}.tools.calls[{n}]") for n, c in enumerate(item.tools.calls)
    )
    return FlowItem(seq=item.seq, kind=ItemKind.TOOLS, timestamp_us=stamp, calls=calls)


def _metadata(request: chat_pb2.UpsertAssistantMessageRequest) -> dict[str, Any]:
    # Decoded once; validation checks it is JSON (finite numbers) while encoding it once.
    try:
        values: dict[str, Any] = json_format.MessageToDict(request.metadata)
    except ValueError:  # NaN and infinities cannot be JSON
        raise InvalidArgument("numbers must be finite", field="metadata") from None
    return values


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


# --- changes, for watchers and on the bus --------------------------------------------------


class PublishedChange:
    """A change as the bus delivered it: the payload and the event parsed from it, relayed
    to BASIC watchers as the payload itself.

    Every watcher of an app in this process shares one of these per change (see
    `ProtoChangeCodec.decode`), so fan-out costs no conversion and no serialisation; its
    `message` is converted to a domain value only if someone asks for it.
    """

    def __init__(self, payload: bytes, event: chat_pb2.MessageEvent) -> None:
        self.payload = payload
        self.event = event
        self.is_delta = event.WhichOneof("change") == "delta"

    @property
    def cursor(self) -> int:
        return self.event.cursor

    @property
    def message_id(self) -> str:
        return self.event.delta.message_id if self.is_delta else self.event.message.id

    @property
    def version(self) -> int:
        return self.event.delta.version if self.is_delta else self.event.message.version

    @functools.cached_property
    def message(self) -> Message:
        return message_from_proto(self.event.message)


def change_to_proto(change: Change) -> chat_pb2.MessageEvent:
    """The event a watcher is sent (a published change is already one)."""
    if isinstance(change, PublishedChange):
        return change.event
    if isinstance(change, DeltaChanged):
        return chat_pb2.MessageEvent(cursor=change.cursor, delta=delta_to_proto(change.delta))
    if isinstance(change, MessageChanged):
        return chat_pb2.MessageEvent(cursor=change.cursor, message=message_to_proto(change.message))
    raise TypeError(f"not a change: {change!r}")


def change_to_wire(change: Change) -> bytes:
    """The serialised event a watcher is sent: a published change's own payload."""
    if isinstance(change, PublishedChange):
        return change.payload
    return change_to_proto(change).SerializeToString()


class ProtoChangeCodec:
    """Changes on the bus as serialised `chat.v1.MessageEvent`s (the service's codec).

    A writer serialises each change once; a process parses each payload once, however
    many of its watchers relay it.
    """

    def encode(self, change: MessageChanged | DeltaChanged) -> bytes:
        return change_to_proto(change).SerializeToString()

    def decode(self, payload: bytes) -> PublishedChange | None:
        """The change a payload carries, or None for one that is not a change event."""
        return _decode_change(payload)


# Every watcher of an app receives the same payload: parse it once.
@functools.lru_cache(maxsize=64)
def _decode_change(payload: bytes) -> PublishedChange | None:
    try:
        event = chat_pb2.MessageEvent.FromString(payload)
    except Exception as exc:  # a foreign or corrupt payload: the watcher resyncs instead
        log.warning("bad_bus_payload", error=repr(exc))
        return None
    if event.WhichOneof("change") is None or event.cursor < 1:
        log.warning("bad_bus_payload", error="an event without a change or cursor")
        return None
    return PublishedChange(payload, event)
