"""Builder values -> protobuf: executions, versions, and what the Build stream yields.

Tool calls and flow items go through the shared `appforge.services.common.flow_proto`
converters; this module only adds the builder's own messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from appforge.api.builder.v1 import builder_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.builder.domain import (
    AppVersion,
    BuildEvent,
    BuildFinished,
    BuildItem,
    BuildStarted,
    Execution,
    RecordedCall,
    shown_recorded_call,
)
from appforge.services.common.flow_proto import call_to_proto, item_to_proto
from appforge.services.common.proto import timestamp


def execution_to_proto(
    execution: Execution, calls: Sequence[RecordedCall], json_limit: int
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
        tool_calls=[call_to_proto(shown_recorded_call(c, json_limit)) for c in calls],
        created_at=timestamp(execution.created_us),
        updated_at=timestamp(execution.updated_us),
    )
    if execution.finished_us is not None:
        out.finished_at.CopyFrom(timestamp(execution.finished_us))
    return out


def version_to_proto(version: AppVersion) -> builder_pb2.AppVersion:
    return builder_pb2.AppVersion(
        id=version.id,
        app_id=version.app_id,
        execution_id=version.execution_id,
        files=files_to_proto(version.files),
        created_at=timestamp(version.created_us),
    )


def files_to_proto(files: Iterable[tuple[str, bytes]]) -> list[flow_pb2.File]:
    """(path, content) pairs as the protobuf files of a version or a Deploy request."""
    return [flow_pb2.File(path=path, content=content) for path, content in files]


def build_event_to_proto(event: BuildEvent) -> builder_pb2.BuildEvent:
    """One event of a Build stream as clients see it."""
    if isinstance(event, BuildStarted):
        return builder_pb2.BuildEvent(
            started=builder_pb2.BuildStarted(
                execution_id=event.execution_id,
                message_id=event.message_id,
                user_message_id=event.user_message_id,
            )
        )
    if isinstance(event, BuildItem):
        return builder_pb2.BuildEvent(item=item_to_proto(event.item, event.execution_id))
    return builder_pb2.BuildEvent(finished=_finished_to_proto(event))


def _finished_to_proto(finished: BuildFinished) -> builder_pb2.BuildFinished:
    return builder_pb2.BuildFinished(
        status=int(finished.status),  # type: ignore[arg-type]
        app_version_id=finished.app_version_id,
        deployment_id=finished.deployment_id,
        error=finished.error,
    )
