"""Whether the watcher's message is the one chat serves, byte for byte, and if not, where
the two differ."""

from __future__ import annotations

import base64

from appforge.api.chat.v1 import chat_pb2


def wire(message: chat_pb2.ChatMessage) -> bytes:
    """The message's deterministic serialisation (metadata keys in order)."""
    return message.SerializeToString(deterministic=True)


def differences(held_b64: str, served: chat_pb2.ChatMessage) -> list[str]:
    """Where the watcher's message (base64 of its deterministic bytes) differs from the one
    GetMessageByExecution served; empty when they are byte-identical."""
    held_bytes = base64.b64decode(held_b64)
    if held_bytes == wire(served):
        return []
    if not held_bytes:
        return ["the watcher holds no such message"]
    held = chat_pb2.ChatMessage.FromString(held_bytes)
    found = []
    for field in chat_pb2.ChatMessage.DESCRIPTOR.fields:
        mine, theirs = getattr(held, field.name), getattr(served, field.name)
        if mine == theirs:
            continue
        if field.name == "flow":
            found.append(
                f"flow: {len(mine)} items held, {len(theirs)} served{_first(mine, theirs)}"
            )
        elif field.name == "content":
            found.append(f"content: {len(mine)} characters held, {len(theirs)} served")
        else:
            found.append(f"{field.name}: {_short(mine)} held, {_short(theirs)} served")
    return found or ["same fields, different bytes"]


def _first(held: list[object], served: list[object]) -> str:
    for n, (mine, theirs) in enumerate(zip(held, served, strict=False)):
        if mine != theirs:
            return f", first different at index {n}"
    return ""


def _short(value: object) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."
