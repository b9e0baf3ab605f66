"""Builder values <-> protobuf: flow items, tool calls, executions, versions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from appforge.api.builder.v1 import builder_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.builder.domain import clip_json
from appforge.services.builder.store import StoredCall, StoredExecution, StoredVersion
from appforge.services.common.flow import ToolCall, ToolStatus
from appforge.services.common.flow_proto import call_to_proto
from appforge.services.common.proto import timestamp


def text_item(execution_id: str, seq: int, stamp_us: int, text: str) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(
        execution_id=execution_id,
        seq=seq,
        timestamp=timestamp(stamp_us),
        message=flow_pb2.TextPart(text=text),
    )


def tools_item(
    execution_id: str, seq: int, stamp_us: int, calls: Iterable[flow_pb2.ToolCall]
) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(
        execution_id=execution_id,
        seq=seq,
        timestamp=timestamp(stamp_us),
        tools=flow_pb2.ToolBatch(calls=list(calls)),
    )


def tool_call(
    call_id: str,
    name: str,
    status: ToolStatus,
    *,
    json_limit: int,
    arguments_json: str = "",
    result_json: str = "",
    error: str = "",
    deadline_us: int | None = None,
) -> flow_pb2.ToolCall:
    """A call as chat and Build clients see it (JSON over `json_limit` summarised)."""
    return call_to_proto(
        ToolCall(
            call_id=call_id,
            name=name,
            status=status,
            arguments_json=clip_json(arguments_json, json_limit) if arguments_json else "",
            result_json=clip_json(result_json, json_limit) if result_json else "",
            error=error,
            deadline_us=deadline_us,
        )
    )


def stored_call(call: StoredCall, json_limit: int) -> flow_pb2.ToolCall:
    return tool_call(
        call.call_id,
        call.name,
        call.status,
        json_limit=json_limit,
        arguments_json=call.arguments_json,
        result_json=call.result_json,
        error=call.error,
        deadline_us=call.deadline_us,
    )


def tools_items(
    execution_id: str, calls: Sequence[StoredCall], json_limit: int
) -> list[flow_pb2.FlowItem]:
    """Every tools item of an execution with each call as stored now, in seq order."""
    by_seq: dict[int, list[StoredCall]] = {}
    for call in calls:
        by_seq.setdefault(call.seq, []).append(call)
    return [
        tools_item(
            execution_id,
            seq,
            batch[0].stamp_us,
            (stored_call(c, json_limit) for c in sorted(batch, key=lambda c: c.position)),
        )
        for seq, batch in sorted(by_seq.items())
    ]


def execution_to_proto(
    execution: StoredExecution, calls: Sequence[StoredCall], json_limit: int
) -> builder_pb2.Execution:
    out = builder_pb2.Execution(
        id=execution.id,
        app_id=execution.app_id,
        user_message_id=execution.user_message_id,
        message_id=execution.message_id,
        status=int(execution.status),  # type: ignore[arg-type]
        model=execution.model,
        prompt=execution.prompt,
        last_seq=execution.last_seq,
        app_version_id=execution.app_version_id,
        deployment_id=execution.deployment_id,
        error=execution.error,
        tool_calls=[stored_call(c, json_limit) for c in calls],
        created_at=timestamp(execution.created_us),
        updated_at=timestamp(execution.updated_us),
    )
    if execution.finished_us is not None:
        out.finished_at.CopyFrom(timestamp(execution.finished_us))
    return out


def version_to_proto(version: StoredVersion) -> builder_pb2.AppVersion:
    return builder_pb2.AppVersion(
        id=version.id,
        app_id=version.app_id,
        execution_id=version.execution_id,
        files=[flow_pb2.File(path=p, content=c) for p, c in version.files],
        created_at=timestamp(version.created_us),
    )
