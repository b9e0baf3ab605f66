"""Running a batch of tool calls: recorded PENDING, then each call STREAMING and ended,
concurrently, under the deadline stored with it.

Every state change is written to the store first: a call the sweeper or a cancel ended
meanwhile does not move, and its runner then leaves telling chat to whoever ended it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appforge.services.builder.domain import TIMED_OUT_ERROR, shown_call, tools_item
from appforge.services.builder.metrics import TOOL_CALLS
from appforge.services.builder.models.base import TOOL_NAMES, ToolRequest, ToolResult
from appforge.services.builder.publisher import FlowPublisher
from appforge.services.builder.sandbox import ToolError
from appforge.services.builder.store import ExecutionStore
from appforge.services.builder.workspace import Workspace
from appforge.services.common.clock import Clock
from appforge.services.common.flow import FlowItem, ToolCall, ToolStatus
from appforge.services.common.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class RecordedBatch:
    """A batch the store holds as PENDING, and its tools item as first published."""

    seq: int
    stamp_us: int
    deadline_us: int
    requests: tuple[ToolRequest, ...]
    item: FlowItem


@dataclass(frozen=True, kw_only=True)
class CallOutcome:
    """How one call ended for its runner: `status` None when someone else ended it."""

    result: ToolResult
    status: ToolStatus | None


class BatchRunner:
    """Records and runs one execution's batches of tool calls in its workspace."""

    def __init__(
        self,
        *,
        execution_id: str,
        store: ExecutionStore,
        workspace: Workspace,
        clock: Clock,
        publisher: FlowPublisher,
        tool_timeout: float,
        json_limit: int,
    ) -> None:
        self.execution_id = execution_id
        self.store = store
        self.workspace = workspace
        self.clock = clock
        self.publisher = publisher
        self.tool_timeout = tool_timeout
        self.json_limit = json_limit

    async def record(
        self, seq: int, stamp_us: int, requests: Sequence[ToolRequest], now_us: int
    ) -> RecordedBatch:
        """Store the batch's calls as PENDING with their deadline; replays change nothing."""
        deadline_us = now_us + round(self.tool_timeout * 1_000_000)
        arguments = [json.dumps(dict(r.arguments)) for r in requests]
        await self.store.add_calls(
            self.execution_id,
            seq,
            [(r.call_id, r.name, a) for r, a in zip(requests, arguments, strict=True)],
            stamp_us=stamp_us,
            deadline_us=deadline_us,
            now_us=now_us,
        )
        pending = [
            self._shown(
                r.call_id, r.name, ToolStatus.PENDING, arguments_json=a, deadline_us=deadline_us
            )
            for r, a in zip(requests, arguments, strict=True)
        ]
        return RecordedBatch(
            seq=seq,
            stamp_us=stamp_us,
            deadline_us=deadline_us,
            requests=tuple(requests),
            item=tools_item(seq, stamp_us, pending),
        )

    async def run(self, batch: RecordedBatch) -> list[CallOutcome]:
        """Every call of the batch at once; their outcomes in the batch's order."""
        return list(await asyncio.gather(*(self._run_call(batch, r) for r in batch.requests)))

    async def _run_call(self, batch: RecordedBatch, request: ToolRequest) -> CallOutcome:
        """One call: STREAMING, then its end, each written to chat as it happens."""
        call_id, name = request.call_id, request.name
        if not await self.store.start_call(self.execution_id, call_id, self.clock.now_us()):
            return CallOutcome(result=ToolResult(call_id=call_id, ok=False), status=None)
        await self._publish(batch, self._shown(call_id, name, ToolStatus.STREAMING))
        output: dict[str, Any] | None = None
        result_json = error = ""
        remaining = max(0.0, (batch.deadline_us - self.clock.now_us()) / 1_000_000)
        try:
            output = await asyncio.wait_for(self.workspace.run(name, request.arguments), remaining)
            status, result_json = ToolStatus.SUCCEEDED, json.dumps(output)
        except ToolError as exc:
            status, error = ToolStatus.FAILED, str(exc)
        except TimeoutError:
            status, error = ToolStatus.TIMED_OUT, TIMED_OUT_ERROR
        moved = await self.store.finish_call(
            self.execution_id,
            call_id,
            status,
            result_json=result_json,
            error=error,
            now_us=self.clock.now_us(),
        )
        if not moved:  # the sweeper or a cancel ended it first; they tell chat
            return CallOutcome(result=ToolResult(call_id=call_id, ok=False), status=None)
        TOOL_CALLS.labels(name if name in TOOL_NAMES else "other", status.name.lower()).inc()
        log.info(
            "tool_call_finished",
            execution_id=self.execution_id,
            call_id=call_id,
            tool=name,
            status=status.name.lower(),
        )
        end = self._shown(call_id, name, status, result_json=result_json, error=error)
        await self._publish(batch, end)
        ok = status is ToolStatus.SUCCEEDED
        return CallOutcome(
            result=ToolResult(call_id=call_id, ok=ok, output=output, error=error), status=status
        )

    async def _publish(self, batch: RecordedBatch, call: ToolCall) -> None:
        # The batch's own seq and stamp: chat merges the call into the item by call id.
        await self.publisher.publish([tools_item(batch.seq, batch.stamp_us, [call])])

    def _shown(self, call_id: str, name: str, status: ToolStatus, **fields: Any) -> ToolCall:
        return shown_call(call_id, name, status, json_limit=self.json_limit, **fields)
