"""Chat domain: messages, flow items, tool calls and the rules that merge them. No I/O.

The merge rules make every write idempotent and convergent, whatever order writes
arrive in: tool status and message status only move forward, a text part only grows,
metadata merges key by key, and the first stamp of an item is the one kept.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
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


class MessageView(IntEnum):
    """How much of a message a reply or a watch event carries (chat.v1.MessageView)."""

    BASIC = 1  # replies: no flow, no content; events: a snapshot first, then deltas
    FULL = 2  # the whole message, always


class Change(Protocol):
    """What a watcher of an app is told at the app's change cursor: a message's whole state
    (a snapshot) or what one write changed in it (a delta, `is_delta`).

    Cursors are dense per app and commit in order, so a watcher that has seen cursor n
    missed nothing when the next change it gets is at n + 1. `MessageChanged` and
    `DeltaChanged` are the plain values; the transport that carries changes between
    processes may relay its own kind (decoded once per process, relayed as is).
    """

    @property
    def cursor(self) -> int: ...

    @property
    def message_id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def is_delta(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class MessageChanged:
    """A snapshot `Change`: a message as stored, at a change cursor."""

    cursor: int
    message: Message

    @property
    def message_id(self) -> str:
        return self.message.id

    @property
    def version(self) -> int:
        return self.message.version

    @property
    def is_delta(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class DeltaChanged:
    """A delta `Change`: what one write changed, at the write's change cursor."""

    cursor: int
    delta: MessageDelta

    @property
    def message_id(self) -> str:
        return self.delta.message_id

    @property
    def version(self) -> int:
        return self.delta.version

    @property
    def is_delta(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class AssistantUpsert:
    """A validated UpsertAssistantMessage request."""

    app_id: str
    execution_id: str
    items: tuple[FlowItem, ...] = ()
    status: MessageStatus | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # `metadata` as JSON, encoded once by validation (None when there is none).
    metadata_json: str | None = None


@dataclass(frozen=True, kw_only=True)
class FlowChanges:
    """What an upsert changes in the flow tables (computed by `merge_flow`).

    `new_items` are whole (a tools item without its calls, which are in `new_calls` with
    their seq and batch position); `appended` are text pieces added to stored items, each
    with the offset it starts at; `updated_calls` are stored calls after the merge, with
    the seq of the item that holds them.
    """

    new_items: tuple[FlowItem, ...] = ()
    appended: tuple[FlowItem, ...] = ()
    new_calls: tuple[tuple[int, int, ToolCall], ...] = ()  # (seq, position, call)
    updated_calls: tuple[tuple[int, ToolCall], ...] = ()  # (seq, call)

    @property
    def empty(self) -> bool:
        return not (self.new_items or self.appended or self.new_calls or self.updated_calls)


StoredCalls = Mapping[str, tuple[int, int, ToolCall]]  # call_id -> (seq, position, call)


@dataclass(frozen=True, kw_only=True)
class MessageDelta:
    """What one write changed in a message (chat.v1.MessageDelta).

    `items` are in seq order: new items whole, text appended to a stored item as a piece
    at its offset, and for a stored tools item only the calls that changed (each whole;
    new ones last, in batch order). `status` is None and `metadata` empty when unchanged.
    """

    message_id: str
    execution_id: str
    version: int
    updated_us: int
    items: tuple[FlowItem, ...] = ()
    status: MessageStatus | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


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


def text_growth(stored: str, offset: int, piece: str, *, where: str) -> str:
    """What `piece`, starting at character `offset`, adds past the end of `stored`.

    Text only grows, and never changes behind the writer: a piece that ends within the
    stored text (and agrees with it) is a replay and adds nothing; one that starts past
    the end, or disagrees with the characters it overlaps, is refused.
    """
    end = len(stored)
    if offset > end:
        raise FailedPrecondition(
            f"appends at offset {offset}, past the end of the text ({end} characters)",
            field=f"{where}.message.offset",
        )
    overlap = stored[offset : offset + len(piece)]
    if piece[: len(overlap)] != overlap:
        raise FailedPrecondition(
            f"disagrees with the stored text at offset {offset}: text never changes "
            "behind the writer",
            field=f"{where}.message.text",
        )
    return piece[len(overlap) :]


def merge_status(old: MessageStatus, new: MessageStatus | None) -> MessageStatus:
    """Message status only moves forward: PENDING < PROCESSING < COMPLETED < FAILED."""
    return old if new is None else max(old, new)


def merge_metadata(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Key by key: keys in `new` replace those in `old`, the rest stay."""
    return {**old, **new}


def merge_flow(
    existing_items: Mapping[int, FlowItem],
    existing_calls: StoredCalls,
    call_positions: Mapping[int, int],
    incoming: Sequence[FlowItem],
) -> FlowChanges:
    """Decide what `incoming` changes, given what is stored of the items it touches.

    `existing_items` maps seq to stored item (calls not needed) for at least the seqs of
    `incoming`, `existing_calls` maps call_id to stored call for at least its calls, and
    `call_positions` maps a tools item's seq to its number of calls. Raises InvalidArgument
    if an item contradicts the stored kind at its seq, FailedPrecondition for a text piece
    that does not continue the stored text (see `text_growth`).
    """
    new_items: dict[int, FlowItem] = {}
    appended: dict[int, FlowItem] = {}
    new_calls: dict[str, tuple[int, int, ToolCall]] = {}
    updated: dict[str, tuple[int, ToolCall]] = {}
    positions = dict(call_positions)
    for index, item in enumerate(incoming):
        where = f"items[{index}]"
        stored = existing_items.get(item.seq)
        known = stored or new_items.get(item.seq)
        if known is not None and known.kind != item.kind:
            raise InvalidArgument(
                f"seq {item.seq} is already a {known.kind.name.lower()} item, "
                f"not a {item.kind.name.lower()} item",
                field=where,
            )
        if item.kind is ItemKind.MESSAGE:
            _merge_text(item, stored, new_items, appended, where)
        elif known is None:
            new_items[item.seq] = replace(item, calls=())
        if item.kind is ItemKind.TOOLS:
            for call in item.calls:
                _merge_call(item.seq, call, existing_calls, positions, new_calls, updated)
    return FlowChanges(
        new_items=tuple(new_items.values()),
        appended=tuple(appended.values()),
        new_calls=tuple(new_calls.values()),
        updated_calls=tuple(updated.values()),
    )


def _merge_text(
    item: FlowItem,
    stored: FlowItem | None,
    new_items: dict[int, FlowItem],
    appended: dict[int, FlowItem],
    where: str,
) -> None:
    if stored is None:
        created = new_items.get(item.seq)
        base = "" if created is None else created.text
        growth = text_growth(base, item.text_offset, item.text, where=where)
        if created is None:
            new_items[item.seq] = replace(item, text=growth, text_offset=0, calls=())
        elif growth:
            new_items[item.seq] = replace(created, text=created.text + growth)
        return
    piece = appended.get(item.seq)
    current = stored.text if piece is None else stored.text + piece.text
    growth = text_growth(current, item.text_offset, item.text, where=where)
    if not growth:
        return
    if piece is None:
        piece = FlowItem(seq=item.seq, kind=ItemKind.MESSAGE, text_offset=len(stored.text))
    appended[item.seq] = replace(piece, text=piece.text + growth)


def _merge_call(
    seq: int,
    call: ToolCall,
    existing: StoredCalls,
    positions: dict[int, int],
    new_calls: dict[str, tuple[int, int, ToolCall]],
    updated: dict[str, tuple[int, ToolCall]],
) -> None:
    if call.call_id in new_calls:
        first_seq, position, first = new_calls[call.call_id]
        new_calls[call.call_id] = (first_seq, position, merge_tool_call(first, call))
        return
    if call.call_id in updated:
        stored_seq, stored = updated[call.call_id]
    elif call.call_id in existing:
        stored_seq, _, stored = existing[call.call_id]
    else:
        position = positions.get(seq, 0)
        positions[seq] = position + 1
        new_calls[call.call_id] = (seq, position, call)
        return
    merged = merge_tool_call(stored, call)
    if merged is not stored:
        updated[call.call_id] = (stored_seq, merged)


def flow_delta(changes: FlowChanges) -> tuple[FlowItem, ...]:
    """The items of a delta, in seq order (see `MessageDelta`)."""
    by_seq: dict[int, FlowItem] = {item.seq: item for item in changes.new_items}
    by_seq.update((piece.seq, piece) for piece in changes.appended)
    calls: dict[int, list[ToolCall]] = {}
    for seq, call in changes.updated_calls:
        calls.setdefault(seq, []).append(call)
    for seq, _, call in sorted(changes.new_calls, key=lambda spc: (spc[0], spc[1])):
        calls.setdefault(seq, []).append(call)
    for seq, item_calls in calls.items():
        base = by_seq.get(seq) or FlowItem(seq=seq, kind=ItemKind.TOOLS)
        by_seq[seq] = replace(base, calls=tuple(item_calls))
    return tuple(by_seq[seq] for seq in sorted(by_seq))


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
    for item in changes.new_items:
        items_after[item.seq] = item
    for piece in changes.appended:
        stored = items_after[piece.seq]
        items_after[piece.seq] = replace(stored, text=stored.text + piece.text)
    calls_after = dict(calls)
    for seq, position, call in changes.new_calls:
        calls_after[call.call_id] = (seq, position, call)
    for _, call in changes.updated_calls:
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

    created: bool
    changes: FlowChanges
    status: MessageStatus
    status_changed: bool
    metadata: dict[str, Any]
    metadata_changes: dict[str, Any]

    @property
    def changed(self) -> bool:
        return (
            self.created
            or not self.changes.empty
            or self.status_changed
            or bool(self.metadata_changes)
        )

    def delta(
        self, *, message_id: str, execution_id: str, version: int, updated_us: int
    ) -> MessageDelta:
        """The delta watchers are sent once the plan is written at `version`."""
        return MessageDelta(
            message_id=message_id,
            execution_id=execution_id,
            version=version,
            updated_us=updated_us,
            items=flow_delta(self.changes),
            status=self.status if self.status_changed else None,
            metadata=self.metadata_changes,
        )


def plan_upsert(
    upsert: AssistantUpsert,
    *,
    created: bool,
    status: MessageStatus,
    metadata: Mapping[str, Any],
    items: Mapping[int, FlowItem],
    calls: StoredCalls,
    positions: Mapping[int, int],
) -> UpsertPlan:
    """Merge an upsert into the stored state of its message: the one place the rules apply.

    `items` (by seq) and `calls` (by id, with their seq and batch position) are what is
    stored of what the upsert touches; `positions` maps a tools item's seq to how many
    calls it holds. Items of `upsert` must already carry their stamps (`stamp_missing`).
    Nothing here is proportional to the message: only to the upsert.
    """
    changes = merge_flow(items, calls, positions, upsert.items)
    new_status = merge_status(status, upsert.status)
    metadata_changes = {
        k: v for k, v in upsert.metadata.items() if k not in metadata or metadata[k] != v
    }
    return UpsertPlan(
        created=created,
        changes=changes,
        status=new_status,
        status_changed=new_status != status,
        metadata=merge_metadata(metadata, metadata_changes),
        metadata_changes=metadata_changes,
    )


@dataclass(frozen=True, kw_only=True)
class UpsertResult:
    """What the store did with an upsert: the message after it (BASIC: no flow, no content;
    FULL when asked), what it changed (None for a replay), and whether it created it."""

    message: Message
    delta: MessageDelta | None
    created: bool = False

    @property
    def changed(self) -> bool:
        return self.delta is not None


def created_message(message: Message, delta: MessageDelta) -> Message:
    """The whole message its first write created: its flow is that write's delta."""
    return replace(message, flow=delta.items, content=assemble_content(delta.items))


def check_owner(upsert: AssistantUpsert, stored_app_id: str) -> None:
    """An execution belongs to the app its message was created in, for good."""
    if stored_app_id != upsert.app_id:
        raise FailedPrecondition(
            f"execution {upsert.execution_id!r} belongs to another app", field="execution_id"
        )


def stamp_missing(
    incoming: Sequence[FlowItem],
    stored: Container[int],
    floor_us: int,
    tick: Callable[[int], int],
) -> tuple[FlowItem, ...]:
    """Stamp new items that arrive without a timestamp, after every stored stamp.

    `stored` holds the seqs already stored, `floor_us` the latest stored stamp, and
    `tick(after_us)` is a hybrid clock: each stamp is later than `after_us` and than every
    stamp before it, so an execution's stamps never repeat.
    """
    if all(item.timestamp_us is not None for item in incoming):
        return tuple(incoming)
    return tuple(
        replace(item, timestamp_us=tick(floor_us))
        if item.timestamp_us is None and item.seq not in stored
        else item
        for item in incoming
    )
