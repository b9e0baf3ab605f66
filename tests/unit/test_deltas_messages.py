"""`deltas.Messages`, the whole messages a watch has shown: without content, bounded in
number, and copied afresh when what was written into one outgrew it."""

from __future__ import annotations

import pytest

from appforge.api.chat.v1 import chat_pb2, deltas
from appforge.api.flow.v1 import flow_pb2


def snapshot(message_id: str, cursor: int, text: str = "") -> chat_pb2.MessageEvent:
    message = chat_pb2.ChatMessage(id=message_id, version=1, cursor=cursor, content=text)
    message.flow.add(seq=1).message.text = text
    return chat_pb2.MessageEvent(cursor=cursor, message=message)


def append(
    message_id: str, version: int, cursor: int, piece: str, offset: int
) -> chat_pb2.MessageEvent:
    delta = chat_pb2.MessageDelta(message_id=message_id, version=version)
    delta.items.add(seq=1, message=flow_pb2.TextPart(text=piece, offset=offset))
    return chat_pb2.MessageEvent(cursor=cursor, delta=delta)


def grow(
    messages: deltas.Messages, message_id: str, pieces: int, piece: str
) -> chat_pb2.ChatMessage:
    message = messages.apply(snapshot(message_id, 1))
    for n in range(pieces):
        message = messages.apply(append(message_id, n + 2, n + 2, piece, n * len(piece)))
    return message


@pytest.mark.parametrize("content", [True, False])
def test_the_text_is_the_same_with_or_without_content(content: bool) -> None:
    message = grow(deltas.Messages(content=content), "m", 300, "typed ")
    assert message.flow[0].message.text == "typed " * 300
    assert message.version == 301 and message.cursor == 301
    assert message.content == ("typed " * 300 if content else "")
    assert deltas.content_of(message) == "typed " * 300


def test_a_snapshot_is_copied_and_loses_its_content_when_content_is_off() -> None:
    event = snapshot("m", 1, "hello")
    kept = deltas.Messages(content=False).apply(event)
    assert kept is not event.message and kept.content == ""
    assert event.message.content == "hello"  # a shared event is never changed


def test_a_long_message_is_copied_afresh_and_stays_whole() -> None:
    messages = deltas.Messages()
    first = messages.apply(snapshot("m", 1))
    piece = "x" * 1000
    seen = {id(first)}
    for n in range(400):  # 400 KB of text: its rewrites pass COMPACT_MIN_BYTES many times
        message = messages.apply(append("m", n + 2, n + 2, piece, n * len(piece)))
        seen.add(id(message))
    assert len(seen) > 2, "the message was never copied afresh"
    assert messages.by_id["m"] is message
    assert message.flow[0].message.text == piece * 400 and message.content == piece * 400


def test_at_most_size_messages_are_kept_the_least_recently_changed_forgotten() -> None:
    messages = deltas.Messages(size=2)
    for n, message_id in enumerate(("a", "b", "c")):
        messages.apply(snapshot(message_id, n + 1))
        if message_id == "b":
            messages.apply(append("a", 2, 10, "more", 0))  # a changed after b
    assert list(messages.by_id) == ["a", "c"]
    with pytest.raises(deltas.DeltaMismatch):
        messages.apply(append("b", 2, 11, "lost", 0))


def test_an_older_snapshot_does_not_replace_what_is_kept() -> None:
    messages = deltas.Messages()
    messages.apply(snapshot("m", 1))
    messages.apply(append("m", 2, 2, "new", 0))
    kept = messages.apply(snapshot("m", 1))
    assert kept.version == 2 and kept.flow[0].message.text == "new"
