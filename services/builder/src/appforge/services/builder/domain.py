"""The builder's values and rules, with no I/O: executions, their tool calls and versions,
what the Build stream says, what an execution's end says, and how its flow is kept within
chat's limits. The store converts its rows into these types; the servicer converts them
to protobuf."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, TypeAlias

from appforge.services.builder.models.base import ToolRequest
from appforge.services.common.flow import FlowItem, ItemKind, ToolCall, ToolStatus

PREVIEW_CHARS: Final = 2_000
TIMED_OUT_ERROR: Final = "the tool call passed its deadline"


# --- the values --------------------------------------------------------------------------


class ExecutionStatus(IntEnum):
    """Where an execution stands (matches appforge.builder.v1.ExecutionStatus)."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4
    TIMED_OUT = 5


class MessageStatus(IntEnum):
    """What the builder says of its execution's assistant message (chat's statuses, by name)."""

    PENDING = 1
    PROCESSING = 2
    COMPLETED = 3
    FAILED = 4


@dataclass(frozen=True, kw_only=True)
class Execution:
    """An execution, with the version and deployment it led to (empty strings if none)."""

    id: str
    app_id: str
    user_message_id: str
    message_id: str
    status: ExecutionStatus
    model: str
    prompt: str
    last_seq: int
    error: str
    owner: str | None
    created_us: int
    updated_us: int
    finished_us: int | None
    app_version_id: str
    deployment_id: str


@dataclass(frozen=True, kw_only=True)
class RecordedCall:
    """A tool call as the builder keeps it: where it sits in the flow, and how it stands."""

    execution_id: str
    call_id: str
    seq: int  # of the tools item the call belongs to
    position: int  # within that item's batch
    name: str
    status: ToolStatus
    arguments_json: str
    result_json: str
    error: str
    deadline_us: int
    stamp_us: int  # of the tools item


@dataclass(frozen=True, kw_only=True)
class AppVersion:
    """An app version: what an execution built, file by file."""

    id: str
    app_id: str
    execution_id: str
    created_us: int
    files: tuple[tuple[str, bytes], ...]


# --- what a Build stream yields ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BuildStarted:
    """The first event: the execution and its one assistant message exist."""

    execution_id: str
    message_id: str
    user_message_id: str


@dataclass(frozen=True, kw_only=True)
class BuildItem:
    """A flow item as it was written to the execution's message."""

    execution_id: str
    item: FlowItem


@dataclass(frozen=True, kw_only=True)
class BuildFinished:
    """The last event: how the execution ended, as stored."""

    status: ExecutionStatus
    app_version_id: str = ""
    deployment_id: str = ""
    error: str = ""


BuildEvent: TypeAlias = BuildStarted | BuildItem | BuildFinished


# --- the flow as chat and Build clients see it -------------------------------------------


_ELLIPSIS: Final = "…"
_ELLIPSIS_BYTES: Final = len(_ELLIPSIS.encode())


def clip_text(text: str, limit_bytes: int) -> str:
    """`text` cut to at most `limit_bytes` of UTF-8, on a character boundary."""
    data = text.encode()
    if len(data) <= limit_bytes:
        return text
    return data[: max(0, limit_bytes - _ELLIPSIS_BYTES)].decode(errors="ignore") + _ELLIPSIS


class TextClip:
    """`clip_text` for a text that arrives in pieces and is written in pieces.

    Whatever `take` hands out is never taken back: every piece written joins the ones
    before it, and all of them joined are `clip_text(whole text, limit_bytes)`. So while
    the text fits, its last few bytes (room for the ellipsis) are held back until either
    the text ends (`final`: they are kept) or more arrives past the limit (they are
    replaced by "…", and anything after that is dropped). Costs what arrives, not what
    was there before.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._held = ""  # arrived, not taken yet
        self._held_bytes = 0
        self._taken_bytes = 0
        self.clipped = False  # the ellipsis went out: the text is complete

    @property
    def pending_chars(self) -> int:
        """Characters that arrived and were not taken yet."""
        return len(self._held)

    def add(self, piece: str) -> None:
        if self.clipped or not piece:
            return
        self._held += piece
        self._held_bytes += len(piece.encode())

    def take(self, *, final: bool = False) -> str:
        """What may be written now (possibly nothing); `final` when no more text will come."""
        if not self._held:
            return ""
        total = self._taken_bytes + self._held_bytes
        safe = self.limit_bytes - _ELLIPSIS_BYTES  # bytes a clipped text keeps
        if total <= safe or (final and total <= self.limit_bytes):
            return self._release(self._held)
        room = max(0, safe - self._taken_bytes)
        kept = self._held.encode()[:room].decode(errors="ignore")
        if total > self.limit_bytes:
            self.clipped = True
            self._held, self._held_bytes = "", 0
            return kept + _ELLIPSIS
        return self._release(kept)

    def _release(self, piece: str) -> str:
        size = len(piece.encode())
        self._held = self._held[len(piece) :]
        self._held_bytes -= size
        self._taken_bytes += size
        return piece


def clip_json(text: str, limit_bytes: int) -> str:
    """`text` (JSON) if it fits in `limit_bytes`, else a JSON summary of it that does.

    A write_file call's arguments hold the whole file; chat shows the call, the sandbox
    and the app version keep the content.
    """
    size = len(text.encode())
    if size <= limit_bytes:
        return text
    summary = {"truncated": True, "bytes": size, "preview": text[:PREVIEW_CHARS]}
    clipped = json.dumps(summary)
    while len(clipped.encode()) > limit_bytes and summary["preview"]:
        summary["preview"] = str(summary["preview"])[: len(str(summary["preview"])) // 2]
        clipped = json.dumps(summary)
    return clipped


def shown_call(
    call_id: str,
    name: str,
    status: ToolStatus,
    *,
    json_limit: int,
    arguments_json: str = "",
    result_json: str = "",
    error: str = "",
    deadline_us: int | None = None,
) -> ToolCall:
    """A call as chat and Build clients see it (JSON over `json_limit` summarised)."""
    return ToolCall(
        call_id=call_id,
        name=name,
        status=status,
        arguments_json=clip_json(arguments_json, json_limit) if arguments_json else "",
        result_json=clip_json(result_json, json_limit) if result_json else "",
        error=error,
        deadline_us=deadline_us,
    )


def shown_recorded_call(call: RecordedCall, json_limit: int) -> ToolCall:
    """A recorded call as chat and Build clients see it."""
    return shown_call(
        call.call_id,
        call.name,
        call.status,
        json_limit=json_limit,
        arguments_json=call.arguments_json,
        result_json=call.result_json,
        error=call.error,
        deadline_us=call.deadline_us,
    )


def text_item(seq: int, stamp_us: int, text: str, offset: int = 0) -> FlowItem:
    """A text item, or the piece of one that starts at character `offset` of its text."""
    return FlowItem(
        seq=seq, kind=ItemKind.MESSAGE, timestamp_us=stamp_us, text=text, text_offset=offset
    )


def tools_item(seq: int, stamp_us: int, calls: Iterable[ToolCall]) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.TOOLS, timestamp_us=stamp_us, calls=tuple(calls))


def tools_items(calls: Sequence[RecordedCall], json_limit: int) -> list[FlowItem]:
    """Every tools item of an execution with each call as recorded now, in seq order."""
    by_seq: dict[int, list[RecordedCall]] = {}
    for call in calls:
        by_seq.setdefault(call.seq, []).append(call)
    return [
        tools_item(
            seq,
            batch[0].stamp_us,
            (shown_recorded_call(c, json_limit) for c in sorted(batch, key=lambda c: c.position)),
        )
        for seq, batch in sorted(by_seq.items())
    ]


# --- the rules of a run and of its end ---------------------------------------------------


def unique_calls(requests: Sequence[ToolRequest], used: set[str]) -> list[ToolRequest]:
    """The batch with call ids unique within the execution (ids are keys in chat and in
    the builder's tables); `used` is updated. A model reusing an id gets a suffixed one."""
    out = []
    for request in requests:
        call_id = request.call_id or "call"
        candidate, n = call_id, 1
        while candidate in used:
            n += 1
            candidate = f"{call_id}-{n}"
        used.add(candidate)
        out.append(request if candidate == request.call_id else _renamed(request, candidate))
    return out


def _renamed(request: ToolRequest, call_id: str) -> ToolRequest:
    return ToolRequest(call_id=call_id, name=request.name, arguments=request.arguments)


def unsuccessful(calls: Iterable[RecordedCall]) -> list[RecordedCall]:
    """Calls that did not succeed, in flow order."""
    return [c for c in calls if c.status is not ToolStatus.SUCCEEDED]


def failure_reason(calls: Sequence[RecordedCall]) -> str:
    """One line naming the calls that did not succeed (the first one's error in full)."""
    first = calls[0]
    reason = f"tool call {first.call_id} ({first.name}) {first.status.name.lower()}"
    if first.error:
        reason += f": {first.error}"
    if len(calls) > 1:
        reason += f" (and {len(calls) - 1} more)"
    return reason


def deadline_reason(call_id: str, name: str) -> str:
    """Why an execution timed out: the first of its calls that passed its deadline."""
    return f"tool call {call_id} ({name}) passed its deadline"


def final_message_status(status: ExecutionStatus) -> MessageStatus:
    """The message status an ended execution leaves on its message."""
    return MessageStatus.COMPLETED if status is ExecutionStatus.SUCCEEDED else MessageStatus.FAILED


def final_metadata(execution: Execution, calls: Sequence[RecordedCall]) -> dict[str, Any]:
    """The metadata an execution's end writes on its message.

    Never `deployment_status`: that key belongs to the deployer, and a redelivered final
    notice must not overwrite "deployed" or "timeout" with something older.
    """
    status = execution.status
    metadata: dict[str, Any] = {"execution_status": status.name.lower()}
    if status is ExecutionStatus.SUCCEEDED:
        metadata["app_version_id"] = execution.app_version_id
        if execution.deployment_id:
            metadata["deployment_id"] = execution.deployment_id
        return metadata
    metadata["error"] = execution.error or f"the execution {status.name.lower()}"
    failed = [c for c in unsuccessful(calls) if c.status.terminal]
    if failed:
        metadata["failed_calls"] = [
            {"call_id": c.call_id, "name": c.name, "status": c.status.name.lower()} for c in failed
        ]
    return metadata
