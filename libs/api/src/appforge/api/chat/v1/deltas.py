"""Rebuilding messages from a WatchApp stream of BASIC events (hand-written, not generated).

A BASIC stream shows each message once whole (`MessageEvent.message`, a snapshot) and then
only what each write changed (`MessageEvent.delta`). `Messages` keeps the messages a stream
has shown and applies every event to them, so a client always holds each message exactly
as `GetMessage` would return it at that event's cursor:

    messages = Messages()
    async for event in stub.WatchApp(chat_pb2.WatchAppRequest(app_id=app_id)):
        message = messages.apply(event)   # the whole message after this event

The rules (chat.proto, `MessageDelta`): a delta applies to the message at `version - 1`; one
at or below the message's version is already applied and is dropped. New items go in seq
order; a text item grows by the piece at `offset`; a tools item's call replaces the call of
that id or, new, goes last; metadata keys are replaced; `content` is the non-empty text
items in seq order, joined by a blank line.
"""

from __future__ import annotations

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2

__all__ = ["DeltaMismatch", "Messages", "apply_delta", "content_of"]


class DeltaMismatch(ValueError):
    """A delta that does not follow the message it is applied to (a missed event)."""


def content_of(message: chat_pb2.ChatMessage) -> str:
    """An assistant message's content: its non-empty text items in seq order, joined."""
    return "\n\n".join(
        item.message.text
        for item in message.flow
        if item.WhichOneof("body") == "message" and item.message.text
    )


def apply_delta(message: chat_pb2.ChatMessage, delta: chat_pb2.MessageDelta) -> bool:
    """Apply `delta` to `message` in place; False when it was already applied.

    Raises DeltaMismatch, leaving `message` as it was, when the delta is for another
    message, skips a version, or does not fit the items it names.
    """
    if delta.message_id != message.id:
        raise DeltaMismatch(f"delta of message {delta.message_id}, not {message.id}")
    if delta.version <= message.version:
        return False
    if delta.version != message.version + 1:
        raise DeltaMismatch(
            f"delta to version {delta.version} on message at version {message.version}"
        )
    updated = chat_pb2.ChatMessage()
    updated.CopyFrom(message)
    _apply_items(updated, delta.items)
    if delta.status != chat_pb2.MESSAGE_STATUS_UNSPECIFIED:
        updated.status = delta.status
    for key, value in delta.metadata.fields.items():
        updated.metadata.fields[key].CopyFrom(value)
    updated.version = delta.version
    updated.updated_at.CopyFrom(delta.updated_at)
    if any(item.WhichOneof("body") == "message" for item in delta.items):
        updated.content = content_of(updated)
    message.CopyFrom(updated)
    return True


def _apply_items(message: chat_pb2.ChatMessage, items: list[flow_pb2.FlowItem]) -> None:
    by_seq = {item.seq: item for item in message.flow}
    added: list[flow_pb2.FlowItem] = []
    for change in items:
        item = by_seq.get(change.seq)
        body = change.WhichOneof("body")
        if item is None:
            added.append(change)
            continue
        if item.WhichOneof("body") != body:
            raise DeltaMismatch(f"item {change.seq} changes kind")
        if body == "message":
            if change.message.offset != len(item.message.text):
                raise DeltaMismatch(
                    f"item {change.seq}: text appended at {change.message.offset}, "
                    f"but it is {len(item.message.text)} characters long"
                )
            item.message.text += change.message.text
            continue
        calls = {call.call_id: call for call in item.tools.calls}
        for call in change.tools.calls:
            if call.call_id in calls:
                calls[call.call_id].CopyFrom(call)
            else:
                calls[call.call_id] = item.tools.calls.add()
                calls[call.call_id].CopyFrom(call)
    if not added:
        return
    last = message.flow[-1].seq if message.flow else 0
    if all(item.seq > last for item in added):
        message.flow.extend(added)  # the usual case: the flow grows at its end
        return
    flow = sorted([*message.flow, *added], key=lambda item: item.seq)
    del message.flow[:]
    message.flow.extend(flow)


class Messages:
    """The messages a WatchApp stream (either view) has shown, kept whole."""

    def __init__(self) -> None:
        self.by_id: dict[str, chat_pb2.ChatMessage] = {}

    def apply(self, event: chat_pb2.MessageEvent) -> chat_pb2.ChatMessage:
        """The whole message after `event` (the object kept here: copy it to keep it)."""
        if event.WhichOneof("change") == "message":
            message = self.by_id.setdefault(event.message.id, chat_pb2.ChatMessage())
            if event.message.version >= message.version:
                message.CopyFrom(event.message)
            return message
        message = self.by_id.get(event.delta.message_id)
        if message is None:
            raise DeltaMismatch(f"delta of message {event.delta.message_id} before its snapshot")
        if apply_delta(message, event.delta):
            message.cursor = event.cursor
        return message
