"""Rows of the chat tables as domain values and back, shared by every store module.

Readers take a mapping (a SQLAlchemy row's `_mapping`, an asyncpg record or a plain dict),
so the portable path and the PostgreSQL hot path build domain values the same way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from appforge.services.chat.domain import (
    App,
    FlowItem,
    ItemKind,
    Message,
    MessageStatus,
    Role,
    ToolCall,
    ToolStatus,
    UpsertPlan,
    assemble_content,
)

CallsBySeq = dict[str, tuple[int, int, ToolCall]]


def new_id() -> str:
    """A fresh primary key for an app or a message."""
    return str(uuid.uuid4())


def app_from_row(row: Mapping[Any, Any]) -> App:
    return App(id=row["id"], team_id=row["team_id"], name=row["name"], created_us=row["created_us"])


def message_from_row(row: Mapping[Any, Any], flow: tuple[FlowItem, ...] = ()) -> Message:
    """A message from a row of chat_messages (SQLAlchemy mapping or asyncpg record)."""
    metadata = row["metadata"]
    return Message(
        id=row["id"],
        app_id=row["app_id"],
        role=Role(row["role"]),
        execution_id=row["execution_id"],
        request_id=row["request_id"],
        content=row.get("content", ""),
        status=MessageStatus(row["status"]),
        metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata or {}),
        version=row["version"],
        cursor=row["cursor"],
        created_us=row["created_us"],
        updated_us=row["updated_us"],
        flow=flow,
    )


def user_message_values(
    *, message_id: str, app_id: str, content: str, request_id: str | None, now: int
) -> dict[str, Any]:
    """The row of a new user message (its cursor is set once the app's counter is bumped)."""
    return {
        "id": message_id,
        "app_id": app_id,
        "role": int(Role.USER),
        "execution_id": None,
        "request_id": request_id,
        "content": content,
        "status": int(MessageStatus.COMPLETED),
        "metadata": {},
        "version": 1,
        "cursor": 0,
        "created_us": now,
        "updated_us": now,
    }


def assistant_message_values(
    *, message_id: str, app_id: str, execution_id: str, now: int
) -> dict[str, Any]:
    """The row of an execution's assistant message before its first write (version 0)."""
    return {
        "id": message_id,
        "app_id": app_id,
        "role": int(Role.ASSISTANT),
        "execution_id": execution_id,
        "content": "",
        "status": int(MessageStatus.PENDING),
        "metadata": {},
        "version": 0,
        "cursor": 0,
        "created_us": now,
        "updated_us": now,
    }


def applied(before: Message, plan: UpsertPlan, *, version: int, cursor: int, now: int) -> Message:
    """The message (BASIC: no flow, no content) after a plan was written."""
    return replace(
        before,
        content="",
        status=plan.status,
        metadata=plan.metadata,
        version=version,
        cursor=cursor,
        updated_us=now,
    )


def with_flow(message: Message, flow: tuple[FlowItem, ...]) -> Message:
    """A message with its whole flow; an assistant message's content is assembled from it."""
    content = assemble_content(flow) if message.role is Role.ASSISTANT else message.content
    return replace(message, flow=flow, content=content)


def item_from_row(row: Mapping[Any, Any]) -> FlowItem:
    return FlowItem(
        seq=row["seq"],
        kind=ItemKind(row["kind"]),
        timestamp_us=row["timestamp_us"],
        text=row["text"],
    )


def call_from_row(row: Mapping[Any, Any]) -> ToolCall:
    return ToolCall(
        call_id=row["call_id"],
        name=row["name"],
        status=ToolStatus(row["status"]),
        arguments_json=row["arguments_json"],
        result_json=row["result_json"],
        error=row["error"],
        deadline_us=row["deadline_us"],
    )


def item_values(execution_id: str, message_id: str, item: FlowItem) -> dict[str, Any]:
    """The row of a new flow item (a tools item's calls have rows of their own)."""
    return {
        "execution_id": execution_id,
        "seq": item.seq,
        "message_id": message_id,
        "kind": int(item.kind),
        "text": item.text,
        "timestamp_us": item.timestamp_us,
    }


def call_values(
    execution_id: str, seq: int, position: int, call: ToolCall, now: int
) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "call_id": call.call_id,
        "seq": seq,
        "position": position,
        "name": call.name,
        "status": int(call.status),
        "arguments_json": call.arguments_json,
        "result_json": call.result_json,
        "error": call.error,
        "deadline_us": call.deadline_us,
        "updated_us": now,
    }


@dataclass(kw_only=True)
class StoredFlow:
    """An execution's stored flow, as `plan_upsert` takes it, built row by row."""

    items: dict[int, FlowItem] = field(default_factory=dict)
    calls: CallsBySeq = field(default_factory=dict)
    positions: dict[int, int] = field(default_factory=dict)  # calls per tools item

    def add_item(self, row: Mapping[Any, Any]) -> None:
        self.items[row["seq"]] = item_from_row(row)

    def add_call(self, row: Mapping[Any, Any]) -> None:
        seq, position = row["seq"], row["position"]
        self.calls[row["call_id"]] = (seq, position, call_from_row(row))
        self.positions[seq] = max(self.positions.get(seq, 0), position + 1)
