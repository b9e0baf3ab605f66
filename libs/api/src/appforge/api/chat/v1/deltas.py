"""Rebuilding messages from a WatchApp stream of BASIC events (hand-written, not generated).

A BASIC stream shows each message once whole (`MessageEvent.message`, a snapshot) and then
only what each write changed (`MessageEvent.delta`). `Messages` keeps the messages a stream
has shown and applies every event to them, so a client always holds each message exactly
as `GetMessage` would return it at that event's cursor:

    messages = Messages()
    async for event in stub.WatchApp(chat_pb2.WatchAppRequest(app_id=app_id)):
        message = messages.apply(event)   # the whole message after this event

`content` is derived from the flow, and keeping it costs the whole content on every delta
(it is rewritten, not appended to). A client that renders the flow, or streams long texts,
passes `Messages(content=False)`: each message's `content` is then left empty, applying an
event costs what it carries, and `content_of(message)` builds the content when it is needed.

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


def apply_delta(
    message: chat_pb2.ChatMessage, delta: chat_pb2.MessageDelta, *, content: bool = True
) -> bool:
    """Apply `delta` to `message` in place; False when it was already applied.

    Costs what the delta carries, not what the message holds (the usual append to the last
    text item or new items at the end never walk the flow), plus, with `content`, rewriting
    the content; without it, `message.content` is left empty. Raises DeltaMismatch, leaving
    `message` as it was, when the delta is for another message, skips a version, or does
    not fit the items it names.
    """
    if delta.message_id != message.id:
        raise DeltaMismatch(f"delta of message {delta.message_id}, not {message.id}")
    if delta.version <= message.version:
        return False
    if delta.version != message.version + 1:
        raise DeltaMismatch(
            f"delta to version {delta.version} on message at version {message.version}"
        )
    plan = _plan(message, delta.items)  # checks everything before changing anything
    after = _content_after(message, delta.items, plan) if content else ""
    _apply_items(message, plan)
    if delta.status != chat_pb2.MESSAGE_STATUS_UNSPECIFIED:
        message.status = delta.status
    for key, value in delta.metadata.fields.items():
        message.metadata.fields[key].CopyFrom(value)
    message.version = delta.version
    message.updated_at.CopyFrom(delta.updated_at)
    message.content = content_of(message) if after is None else after
    return True


_Plan = list[tuple[flow_pb2.FlowItem, flow_pb2.FlowItem | None]]  # (change, item it changes)


def _index(message: chat_pb2.ChatMessage, seq: int) -> flow_pb2.FlowItem | None:
    """The item at `seq`: a look at the end first (where deltas usually land), then a search."""
    flow = message.flow
    if not flow:
        return None
    if flow[-1].seq == seq:
        return flow[-1]
    if flow[-1].seq < seq:
        return None
    low, high = 0, len(flow) - 1
    while low <= high:
        middle = (low + high) // 2
        if flow[middle].seq < seq:
            low = middle + 1
        elif flow[middle].seq > seq:
            high = middle - 1
        else:
            return flow[middle]
    return None


def _plan(message: chat_pb2.ChatMessage, items: list[flow_pb2.FlowItem]) -> _Plan:
    plan: _Plan = []
    for change in items:
        item = _index(message, change.seq)
        body = change.WhichOneof("body")
        if item is not None and item.WhichOneof("body") != body:
            raise DeltaMismatch(f"item {change.seq} changes kind")
        if item is not None and body == "message":
            if change.message.offset != len(item.message.text):
                raise DeltaMismatch(
                    f"item {change.seq}: text appended at {change.message.offset}, "
                    f"but it is {len(item.message.text)} characters long"
                )
        plan.append((change, item))
    return plan


def _last_text(message: chat_pb2.ChatMessage) -> flow_pb2.FlowItem | None:
    for item in reversed(message.flow):
        if item.WhichOneof("body") == "message":
            return item
    return None


def _content_after(
    message: chat_pb2.ChatMessage, items: list[flow_pb2.FlowItem], plan: _Plan
) -> str | None:
    """The content after the delta, built from the current one when the delta only grows
    the last text item or adds text items after it; None: assemble it again."""
    texts = [(change, item) for change, item in plan if change.WhichOneof("body") == "message"]
    if not texts:
        return message.content
    last = _last_text(message)
    last_seq = last.seq if last is not None else 0
    last_empty = last is None or not last.message.text
    content = message.content
    for change, item in texts:
        piece = change.message.text
        if item is not None and item.seq == last_seq:
            if piece:
                content += ("\n\n" if last_empty and content else "") + piece
                last_empty = False
        elif item is None and change.seq > last_seq:
            if piece:
                content += ("\n\n" if content else "") + piece
            last_seq, last_empty = change.seq, not piece
        elif piece:
            return None  # text grew before the end: assemble it again
    return content


def _apply_items(message: chat_pb2.ChatMessage, plan: _Plan) -> None:
    added: list[flow_pb2.FlowItem] = []
    for change, item in plan:
        if item is None:
            added.append(change)
        elif change.WhichOneof("body") == "message":
            item.message.text += change.message.text
        else:
            calls = {call.call_id: call for call in item.tools.calls}
            for call in change.tools.calls:
                known = calls.get(call.call_id)
                if known is None:
                    known = calls[call.call_id] = item.tools.calls.add()
                known.CopyFrom(call)
    if not added:
        return
    last = message.flow[-1].seq if message.flow else 0
    if all(item.seq > last for item in added):
        message.flow.extend(added)  # the usual case: the flow grows at its end
        return
    flow = sorted([*message.flow, *added], key=lambda item: item.seq)
    del message.flow[:]
    message.flow.extend(flow)


# Bytes written into a kept message (whose strings are never freed in place) beyond which
# it is copied afresh, once they also pass its own size: memory stays within a small
# multiple of what the messages hold, at an amortised cost per byte applied.
COMPACT_MIN_BYTES = 64 * 1024


def _written(message: chat_pb2.ChatMessage, delta: chat_pb2.MessageDelta) -> int:
    """Bytes applying `delta` stored in `message`: a text that grows is stored again whole
    (from its offset), and so is the content."""
    grown = sum(c.message.offset for c in delta.items if c.WhichOneof("body") == "message")
    return delta.ByteSize() + grown + len(message.content)


class Messages:
    """The messages a WatchApp stream (either view) has shown, kept whole.

    `content=False` leaves each message's `content` empty (see the module's docstring);
    `size` bounds how many messages are kept, the least recently changed forgotten first
    (a delta of a forgotten message is then a DeltaMismatch, as before its snapshot).
    """

    def __init__(self, *, content: bool = True, size: int | None = None) -> None:
        self.content = content
        self.size = size
        self.by_id: dict[str, chat_pb2.ChatMessage] = {}
        # Per message: bytes written since it was last copied, and the size that triggers it.
        self._written: dict[str, tuple[int, int]] = {}

    def apply(self, event: chat_pb2.MessageEvent) -> chat_pb2.ChatMessage:
        """The whole message after `event` (the object kept here: copy it to keep it)."""
        if event.WhichOneof("change") == "message":
            return self.put(event.message)
        message = self.by_id.get(event.delta.message_id)
        if message is None:
            raise DeltaMismatch(f"delta of message {event.delta.message_id} before its snapshot")
        if apply_delta(message, event.delta, content=self.content):
            message.cursor = event.cursor
            message = self._compacted(message, _written(message, event.delta))
        return self._keep(message)

    def put(self, snapshot: chat_pb2.ChatMessage) -> chat_pb2.ChatMessage:
        """Keep a copy of a whole message, unless a later version is kept already."""
        message = self.by_id.get(snapshot.id)
        if message is None or snapshot.version >= message.version:
            message = chat_pb2.ChatMessage()
            message.CopyFrom(snapshot)  # an event may be shared: never mutate it
            if not self.content:
                message.content = ""
            self._written.pop(snapshot.id, None)
        return self._keep(message)

    def _keep(self, message: chat_pb2.ChatMessage) -> chat_pb2.ChatMessage:
        self.by_id.pop(message.id, None)
        self.by_id[message.id] = message  # the most recently changed last
        if self.size is not None and len(self.by_id) > self.size:
            forgotten = next(iter(self.by_id))
            del self.by_id[forgotten]
            self._written.pop(forgotten, None)
        return message

    def _compacted(self, message: chat_pb2.ChatMessage, written: int) -> chat_pb2.ChatMessage:
        """The message, copied afresh when what was written into it outgrew it: protobuf
        keeps every string a message was ever given until the message itself is freed."""
        total, limit = self._written.get(message.id, (0, COMPACT_MIN_BYTES))
        total += written
        if total < limit:
            self._written[message.id] = (total, limit)
            return message
        fresh = chat_pb2.ChatMessage()
        fresh.CopyFrom(message)
        self._written[message.id] = (0, max(COMPACT_MIN_BYTES, fresh.ByteSize()))
        return fresh
