"""Builder rules with no I/O: what an execution's end says, and how its flow is kept
within chat's limits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from appforge.services.builder.models.base import ToolRequest
from appforge.services.builder.store import ExecutionStatus, StoredCall, StoredExecution
from appforge.services.common.flow import ToolStatus

PREVIEW_CHARS: Final = 2_000


def clip_text(text: str, limit_bytes: int) -> str:
    """`text` cut to at most `limit_bytes` of UTF-8, on a character boundary."""
    data = text.encode()
    if len(data) <= limit_bytes:
        return text
    return data[: max(0, limit_bytes - 3)].decode(errors="ignore") + "…"


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


def unsuccessful(calls: Iterable[StoredCall]) -> list[StoredCall]:
    """Calls that did not succeed, in flow order."""
    return [c for c in calls if c.status is not ToolStatus.SUCCEEDED]


def failure_reason(calls: Sequence[StoredCall]) -> str:
    """One line naming the calls that did not succeed (the first one's error in full)."""
    first = calls[0]
    reason = f"tool call {first.call_id} ({first.name}) {first.status.name.lower()}"
    if first.error:
        reason += f": {first.error}"
    if len(calls) > 1:
        reason += f" (and {len(calls) - 1} more)"
    return reason


def final_metadata(execution: StoredExecution, calls: Sequence[StoredCall]) -> dict[str, Any]:
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
