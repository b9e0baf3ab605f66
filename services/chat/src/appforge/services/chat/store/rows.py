"""Rows of the chat tables as domain values, shared by both store paths."""

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
)

CallsBySeq = dict[str, tuple[int, int, ToolCall]]


def new_id() -> str:
    return str(uuid.uuid4())


def app_from_row(row: Any) -> App:
    return App(id=row.id, team_id=row.team_id, name=row.name, created_us=row.created_us)


def message_from_row(row: Mapping[Any, Any], flow: tuple[FlowItem, ...] = ()) -> Message:
    """A message from a row of chat_messages (SQLAlchemy mapping or asyncpg record)."""
    metadata = row["metadata"]
    return Message(
        id=row["id"],
        app_id=row["app_id"],
        role=Role(row["role"]),
        execution_id=row["execution_id"],
        request_id=row["request_id"],
        content=row["content"],
        status=MessageStatus(row["status"]),
        metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata or {}),
        version=row["version"],
        cursor=row["cursor"],
        created_us=row["created_us"],
        updated_us=row["updated_us"],
        flow=flow,
    )


def applied(before: Message, plan: UpsertPlan, *, version: int, cursor: int, now: int) -> Message:
    """The message after a plan was written."""
    return replace(
        before,
        content=plan.content,
        status=plan.status,
        metadata=plan.metadata,
        flow=plan.flow,
        version=version,
        cursor=cursor,
        updated_us=now,
    )


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
