"""Rows of the builder's tables as domain values, and the row facts every query shares."""

from __future__ import annotations

from typing import Any, Final

from appforge.services.builder.domain import Execution, ExecutionStatus, RecordedCall
from appforge.services.common.flow import ToolStatus

# A call still in flight: the sweeper's and every end's question.
OPEN_CALL_STATUSES: Final = (int(ToolStatus.PENDING), int(ToolStatus.STREAMING))
# Errors are free text from models and tools; the column keeps a bounded prefix.
MAX_ERROR_CHARS: Final = 4000


def execution_from_row(row: Any) -> Execution:
    """An execution row joined with its version and deploy request (see `ExecutionQueries.get`)."""
    return Execution(
        id=row.id,
        app_id=row.app_id,
        user_message_id=row.user_message_id,
        message_id=row.message_id,
        status=ExecutionStatus(row.status),
        model=row.model,
        prompt=row.prompt,
        last_seq=row.last_seq,
        error=row.error,
        owner=row.owner,
        created_us=row.created_us,
        updated_us=row.updated_us,
        finished_us=row.finished_us,
        app_version_id=row.app_version_id or "",
        deployment_id=row.deployment_id or "",
    )


def call_from_row(row: Any) -> RecordedCall:
    return RecordedCall(
        execution_id=row.execution_id,
        call_id=row.call_id,
        seq=row.seq,
        position=row.position,
        name=row.name,
        status=ToolStatus(row.status),
        arguments_json=row.arguments_json,
        result_json=row.result_json,
        error=row.error,
        deadline_us=row.deadline_us,
        stamp_us=row.stamp_us,
    )
