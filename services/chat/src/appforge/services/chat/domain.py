"""Chat domain: messages, flow items, tool calls and the rules that merge them. No I/O.

The merge rules make every write idempotent and convergent, whatever order writes
arrive in: tool status and message status only move forward, a text part only grows,
metadata merges key by key, and the first stamp of an item is the one kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Protocol

from appforge.services.common.errors import FailedPrecondition, InvalidArgument
from appforge.services.common.flow import FlowItem as FlowItem
from appforge.services.common.flow import ItemKind as ItemKind
from appforge.services.common.flow import ToolCall as ToolCall
from appforge.services.common.flow import ToolStatus as ToolStatus


class Role(IntEnum):
    """Who wrote a message."""

    USER = 1
    ASSISTANT = 2
    SYSTEM = 3


class MessageStatus(IntEnum):
    """Ordered: a message's status only moves forward."""

    PENDING = 1
    PROCESSING = 2
    COMPLETED = 3
    FAILED = 4


# pending → streaming → any terminal state; terminal states share a rank, so the first
# terminal state to arrive wins and a later, different one is ignored.
TOOL_RANK = {
    ToolStatus.PENDING: 0,
    ToolStatus.STREAMING: 1,
    ToolStatus.SUCCEEDED: 2,
    ToolStatus.FAILED: 2,
    ToolStatus.TIMED_OUT: 2,
    ToolStatus.CANCELLED: 2,
}


@dataclass(frozen=True, kw_only=True)
class App:
    """An app: the container of a conversation."""

    id: str
    team_id: str
    name: str
    created_us: int


@dataclass(frozen=True, kw_only=True)
class Message:
    """A chat message with its flow (assistant messages only) in seq order."""

    id: str
    app_id: str
    role: Role
    execution_id: str | None
    content: str
    status: MessageStatus
    metadata: Mapping[str, Any]
    version: int
    created_us: int
    updated_us: int
    cursor: int
    request_id: str | None = None
    flow: tuple[FlowItem, ...] = ()


class Change(Protocol):
    """What a watcher of an app is told: a message's state after a change, at the app's
    change cursor.

    Cursors are dense per app and commit in order, so a watcher that has seen cursor n
    missed nothing when the next change it gets is at n + 1. `MessageChanged` is the plain
    value; the transport that carries changes between processes may relay its own kind
    (one decoded once per process, its message converted only when asked for).
    """

    @property
    def cursor(self) -> int: ...

    @property
    def message(self) -> Message: ...


@dataclass(frozen=True, kw_only=True)
class MessageChanged:
    """A `Change` as a plain value: a message as stored, at its change cursor."""

    cursor: int
    message: Message


@dataclass(frozen=True, kw_only=True)
class AssistantUpsert:
    """A validated UpsertAssistantMessage request."""

    app_id: str
    execution_id: str
    items: tuple[FlowItem, ...] = ()
    status: MessageStatus | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FlowChanges:
    """What an upsert changes in the flow tables (computed by `merge_flow`)."""

    new_items: tuple[FlowItem, ...] = ()
    grown_texts: tuple[FlowItem, ...] = ()
    new_calls: tuple[tuple[int, int, ToolCall], ...] = ()  # (seq, position, call)
    updated_calls: tuple[ToolCall, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.new_items or self.grown_texts or self.new_calls or self.updated_calls)


# --- merge rules ---------------------------------------------------------------------------


def merge_tool_call(old: ToolCall, new: ToolCall) -> ToolCall:
    """The call after `new` arrives on top of `old`; `old` itself when nothing changes.

    A higher-ranked status wins and brings its non-empty fields. Any other write may only
    fill fields still empty (a late PENDING still delivers the name and arguments a
    SUCCEEDED write lacked), except a different terminal state, which is ignored whole:
    the first terminal state wins.
    """
    old_rank, new_rank = TOOL_RANK[old.status], TOOL_RANK[new.status]
    if old.status.terminal and new.status.terminal and new.status != old.status:
        return old
    if new_rank > old_rank:
        merged = ToolCall(
            call_id=old.call_id,
            name=new.name or old.name,
            status=new.status,
            arguments_json=new.arguments_json or old.arguments_json,
            result_json=new.result_json or old.result_json,
            error=new.error or old.error,
            deadline_us=new.deadline_us if new.deadline_us is not None else old.deadline_us,
        )
    else:
        merged = replace(
            old,
            name=old.name or new.name,
            arguments_json=old.arguments_json or new.arguments_json,
            result_json=old.result_json or new.result_json,
            error=old.error or new.error,
            deadline_us=old.deadline_us if old.deadline_us is not None else new.deadline_us,
        )
    return old if merged == old else merged


def merge_text(old: str, new: str) -> str:
    """A text part only grows: a shorter (older, out-of-order) copy is ignored."""
    return new if len(new) > len(old) else old


def merge_status(old: MessageStatus, new: MessageStatus | None) -> MessageStatus:
    """Message status only moves forward: PENDING < PROCESSING < COMPLETED < FAILED."""
    return old if new is None else max(old, new)


def merge_metadata(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Key by key: keys in `new` replace those in `old`, the rest stay."""
    return {**old, **new}


def merge_flow(
    existing_items: Mapping[int, FlowItem],
    existing_calls: Mapping[str, ToolCall],
    call_positions: Mapping[int, int],
    incoming: Sequence[FlowItem],
) -> FlowChanges:
    """Decide what `incoming` changes, given what is stored.

    `existing_items` maps seq to stored item (calls not needed), `existing_calls` maps
    call_id to stored call, `call_positions` maps a tools item's seq to its number of
    calls. Raises InvalidArgument if an item contradicts the stored kind at its seq.
    """
    new_items: dict[int, FlowItem] = {}
    grown: dict[int, FlowItem] = {}
    new_calls: dict[str, tuple[int, int, ToolCall]] = {}
    updated: dict[str, ToolCall] = {}
    positions = dict(call_positions)
    for index, item in enumerate(incoming):
        stored = existing_items.get(item.seq) or new_items.get(item.seq)
        if stored is not None and stored.kind != item.kind:
            raise InvalidArgument(
                f"seq {item.seq} is already a {stored.kind.name.lower()} item, "
                f"not a {item.kind.name.lower()} item",
                field=f"items[{index}]",
            )
        if stored is None:
            new_items[item.seq] = replace(item, calls=())
        elif item.kind is ItemKind.MESSAGE:
            base = grown.get(item.seq, stored)
            text = merge_text(base.text, item.text)
            if text != base.text:
                grown[item.seq] = replace(base, text=text)
        if item.kind is ItemKind.TOOLS:
            for call in item.calls:
                _merge_call(item.seq, call, existing_calls, positions, new_calls, updated)
    return FlowChanges(
        new_items=tuple(new_items.values()),
        grown_texts=tuple(grown.values()),
        new_calls=tuple(new_calls.values()),
        updated_calls=tuple(updated.values()),
    )


def _merge_call(
    seq: int,
    call: ToolCall,
    existing: Mapping[str, ToolCall],
    positions: dict[int, int],
    new_calls: dict[str, tuple[int, int, ToolCall]],
    updated: dict[str, ToolCall],
) -> None:
    if call.call_id in new_calls:
        first_seq, position, first = new_calls[call.call_id]
        new_calls[call.call_id] = (first_seq, position, merge_tool_call(first, call))
        return
    stored = updated.get(call.call_id) or existing.get(call.call_id)
    if stored is None:
        position = positions.get(seq, 0)
        positions[seq] = position + 1
        new_calls[call.call_id] = (seq, position, call)
        return
    merged = merge_tool_call(stored, call)
    if merged is not stored:
        updated[call.call_id] = merged


def assemble_content(items: Iterable[FlowItem]) -> str:
    """The message's content: its text items in seq order, joined by blank lines."""
    texts = [i.text for i in sorted(items, key=lambda i: i.seq) if i.kind is ItemKind.MESSAGE]
    return "\n\n".join(t for t in texts if t)


def apply_changes(
    items: Mapping[int, FlowItem],
    calls: Mapping[str, tuple[int, int, ToolCall]],
    changes: FlowChanges,
) -> tuple[dict[int, FlowItem], dict[str, tuple[int, int, ToolCall]]]:
    """The flow after `changes`: items by seq, calls by id with their (seq, position)."""
    items_after = dict(items)
    for item in (*changes.new_items, *changes.grown_texts):
        items_after[item.seq] = item
    calls_after = dict(calls)
    for seq, position, call in changes.new_calls:
        calls_after[call.call_id] = (seq, position, call)
    for call in changes.updated_calls:
        seq, position, _ = calls_after[call.call_id]
        calls_after[call.call_id] = (seq, position, call)
    return items_after, calls_after


def assemble_flow(
    items: Mapping[int, FlowItem], calls: Mapping[str, tuple[int, int, ToolCall]]
) -> tuple[FlowItem, ...]:
    """Items in seq order, each tools item holding its calls in batch order."""
    by_seq: dict[int, list[tuple[int, ToolCall]]] = {}
    for seq, position, call in calls.values():
        by_seq.setdefault(seq, []).append((position, call))
    flow = []
    for seq in sorted(items):
        item = items[seq]
        if item.kind is ItemKind.TOOLS:
            ordered = tuple(c for _, c in sorted(by_seq.get(seq, []), key=lambda pc: pc[0]))
            item = replace(item, calls=ordered)
        flow.append(item)
    return tuple(flow)


@dataclass(frozen=True, kw_only=True)
class UpsertPlan:
    """What one UpsertAssistantMessage call does to a locked message (see `plan_upsert`)."""

    changes: FlowChanges
    status: MessageStatus
    metadata: dict[str, Any]
    changed: bool
    flow: tuple[FlowItem, ...]
    content: str


def plan_upsert(
    upsert: AssistantUpsert,
    *,
    created: bool,
    status: MessageStatus,
    metadata: Mapping[str, Any],
    items: Mapping[int, FlowItem],
    calls: Mapping[str, tuple[int, int, ToolCall]],
    positions: Mapping[int, int],
) -> UpsertPlan:
    """Merge an upsert into the stored state of its message: the one place the rules apply.

    `items` (by seq) and `calls` (by id, with their seq and batch position) are what is
    stored; `positions` maps a tools item's seq to how many calls it holds. Items of
    `upsert` must already carry their stamps (see `stamp_missing`).
    """
    changes = merge_flow(items, {k: v[2] for k, v in calls.items()}, positions, upsert.items)
    new_status = merge_status(status, upsert.status)
    new_metadata = merge_metadata(metadata, upsert.metadata)
    items_after, calls_after = apply_changes(items, calls, changes)
    return UpsertPlan(
        changes=changes,
        status=new_status,
        metadata=new_metadata,
        changed=created
        or not changes.empty
        or new_status != status
        or new_metadata != dict(metadata),
        flow=assemble_flow(items_after, calls_after),
        content=assemble_content(items_after.values()),
    )


def check_owner(upsert: AssistantUpsert, stored_app_id: str) -> None:
    """An execution belongs to the app its message was created in, for good."""
    if stored_app_id != upsert.app_id:
        raise FailedPrecondition(
            f"execution {upsert.execution_id!r} belongs to another app", field="execution_id"
        )


def stamp_missing(
    incoming: Sequence[FlowItem], stored: Mapping[int, FlowItem], tick: Callable[[int], int]
) -> tuple[FlowItem, ...]:
    """Stamp new items that arrive without a timestamp, after every stored stamp.

    `tick(after_us)` is a hybrid clock: each stamp is later than `after_us` and than every
    stamp before it, so an execution's stamps never repeat.
    """
    if all(item.timestamp_us is not None for item in incoming):
        return tuple(incoming)
    floor = max((i.timestamp_us or 0 for i in stored.values()), default=0)
    return tuple(
        replace(item, timestamp_us=tick(floor))
        if item.timestamp_us is None and item.seq not in stored
        else item
        for item in incoming
    )
