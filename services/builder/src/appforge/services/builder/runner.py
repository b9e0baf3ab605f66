"""One execution, from the model's first turn to the deploy request.

Each turn of the model becomes flow items: its text a `message` item, its tool calls one
`tools` item whose calls start PENDING. seq and stamps come from the execution's row
(`ExecutionStore.allocate`), never from sleeping. The calls of a batch run concurrently,
each under the deadline stored with it, and every state change is written at once to the
execution's one assistant message and streamed to Build clients. When the model is done
and every call succeeded, the files become an app version and Deploy is called once.

Whoever ends an execution (this runner, CancelExecution, the sweeper) delivers its final
notice; the outbox redelivers it if chat was down.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.builder.clients import ChatPort, DeployerPort
from appforge.services.builder.convert import text_item, tool_call, tools_item
from appforge.services.builder.domain import (
    clip_text,
    failure_reason,
    unique_calls,
    unsuccessful,
)
from appforge.services.builder.metrics import DUPLICATE_MESSAGES, EXECUTIONS, TOOL_CALLS
from appforge.services.builder.models.base import (
    TOOL_NAMES,
    Exchange,
    Model,
    ToolRequest,
    ToolResult,
    Turn,
)
from appforge.services.builder.models.openai import ModelError
from appforge.services.builder.notices import FinalNotices
from appforge.services.builder.sandbox import Sandbox, ToolError
from appforge.services.builder.store import TIMED_OUT_ERROR, ExecutionStatus, ExecutionStore
from appforge.services.common.clock import Clock
from appforge.services.common.errors import AppforgeError
from appforge.services.common.flow import ToolStatus
from appforge.services.common.logging import get_logger
from appforge.services.common.settings import Limits

log = get_logger(__name__)

Emit = Callable[[builder_pb2.BuildEvent], None]


class Workspace(Protocol):
    """Where an execution's tool calls run, and what it built."""

    async def run(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """One tool call's output; ToolError for a call that cannot be done."""
        ...

    async def snapshot(self) -> list[tuple[str, bytes]]:
        """Every file, in path order."""
        ...

    async def discard(self) -> None:
        """Remove the files once the execution has ended (the version keeps them)."""
        ...


class SandboxWorkspace:
    """A `Sandbox` directory, its blocking file work done in threads."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def run(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sandbox.run, name, arguments)

    async def snapshot(self) -> list[tuple[str, bytes]]:
        return await asyncio.to_thread(self.sandbox.snapshot)

    async def discard(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.sandbox.root, True)


@dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    """Deadlines and limits of an execution."""

    tool_timeout: float
    max_turns: int
    limits: Limits
    # A final notice this runner failed to deliver is redelivered by the outbox after this.
    notice_grace: float = 10.0


@dataclass(frozen=True, kw_only=True)
class ExecutionInput:
    """What an execution was started with."""

    execution_id: str
    app_id: str
    prompt: str
    message_id: str


class _Failed(Exception):
    """The execution ends with `status` for `reason`."""

    def __init__(self, status: ExecutionStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _EndedElsewhere(Exception):
    """Someone else ended the execution (a cancel, the sweeper); they deliver its end."""


@dataclass(frozen=True, kw_only=True)
class _CallOutcome:
    result: ToolResult
    status: ToolStatus | None  # None: ended by someone else


class ExecutionRunner:
    """Runs one execution to its end; `stop()` when it was ended elsewhere."""

    def __init__(
        self,
        execution: ExecutionInput,
        *,
        model: Model,
        workspace: Workspace,
        store: ExecutionStore,
        chat: ChatPort,
        deployer: DeployerPort,
        notices: FinalNotices,
        clock: Clock,
        config: RunnerConfig,
        emit: Emit,
    ) -> None:
        self.execution = execution
        self.model = model
        self.workspace = workspace
        self.store = store
        self.chat = chat
        self.deployer = deployer
        self.notices = notices
        self.clock = clock
        self.config = config
        self.emit = emit
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._ending = False  # this runner is ending the execution itself

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"execution-{self.execution_id}")
        return self._task

    def stop(self) -> None:
        """The execution was ended elsewhere: stop working on it.

        A no-op once the runner is ending it itself: the row no longer says RUNNING then
        (so a heartbeat takes it for ended elsewhere), and cancelling would cut off its
        final notice or its `finished` event.
        """
        if self._ending:
            return
        self._stopped = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def run(self) -> None:
        """Run to the end; never raises except to pass on a shutdown's cancellation."""
        log.info("execution_started", execution_id=self.execution_id, model=self.model.name)
        try:
            await self._run()
        finally:
            await self._finished()
            await self.workspace.discard()

    async def _run(self) -> None:
        try:
            await self._converse()
            await self._complete()
        except asyncio.CancelledError:
            if self._stopped:
                return
            await self._end(ExecutionStatus.FAILED, "the builder shut down during the execution")
            raise
        except _EndedElsewhere:
            return
        except _Failed as exc:
            await self._end(exc.status, exc.reason)
        except ModelError as exc:
            await self._end(ExecutionStatus.FAILED, f"the model failed: {exc}")
        except AppforgeError as exc:
            await self._end(ExecutionStatus.FAILED, str(exc))
        except Exception as exc:
            log.exception("execution_crashed", execution_id=self.execution_id)
            await self._end(
                ExecutionStatus.FAILED, f"internal error in the builder: {type(exc).__name__}"
            )

    # --- the conversation ----------------------------------------------------------------

    async def _converse(self) -> None:
        history: list[Exchange] = []
        used_ids: set[str] = set()
        for _ in range(self.config.max_turns):
            turn = await self.model.next_turn(self.execution.prompt, history)
            requests = unique_calls(turn.tool_calls, used_ids)
            if len(requests) > self.config.limits.max_calls_per_batch:
                raise _Failed(
                    ExecutionStatus.FAILED,
                    f"the model asked for {len(requests)} tool calls in one batch; "
                    f"the limit is {self.config.limits.max_calls_per_batch}",
                )
            outcomes = await self._take_turn(turn.text, requests)
            if not requests:
                return
            if any(o.status is None for o in outcomes):
                raise _EndedElsewhere
            timed_out = [
                r
                for r, o in zip(requests, outcomes, strict=True)
                if o.status is ToolStatus.TIMED_OUT
            ]
            if timed_out:
                first = timed_out[0]
                raise _Failed(
                    ExecutionStatus.TIMED_OUT,
                    f"tool call {first.call_id} ({first.name}) passed its deadline",
                )
            history.append(
                Exchange(
                    turn=Turn(text=turn.text, tool_calls=tuple(requests)),
                    results=tuple(o.result for o in outcomes),
                )
            )
        raise _Failed(
            ExecutionStatus.FAILED,
            f"the model was still calling tools after {self.config.max_turns} turns",
        )

    async def _take_turn(self, text: str, requests: Sequence[ToolRequest]) -> list[_CallOutcome]:
        """Write the turn's text and batch as new flow items, then run the batch."""
        count = int(bool(text)) + int(bool(requests))
        if count == 0:
            return []
        now = self.clock.now_us()
        stamps = await self.store.allocate(self.execution_id, count, now)
        items: list[flow_pb2.FlowItem] = []
        if text:
            seq, stamp = stamps.pop(0)
            clipped = clip_text(text, self.config.limits.max_text_bytes)
            items.append(text_item(self.execution_id, seq, stamp, clipped))
        if not requests:
            await self._publish(items)
            return []
        seq, stamp = stamps.pop(0)
        deadline_us = now + round(self.config.tool_timeout * 1_000_000)
        arguments = [json.dumps(dict(r.arguments)) for r in requests]
        await self.store.add_calls(
            self.execution_id,
            seq,
            [(r.call_id, r.name, a) for r, a in zip(requests, arguments, strict=True)],
            stamp_us=stamp,
            deadline_us=deadline_us,
            now_us=now,
        )
        pending = [
            self._call(
                r.call_id, r.name, ToolStatus.PENDING, arguments_json=a, deadline_us=deadline_us
            )
            for r, a in zip(requests, arguments, strict=True)
        ]
        items.append(tools_item(self.execution_id, seq, stamp, pending))
        await self._publish(items)
        return list(
            await asyncio.gather(*(self._run_call(seq, stamp, r, deadline_us) for r in requests))
        )

    async def _run_call(
        self, seq: int, stamp: int, request: ToolRequest, deadline_us: int
    ) -> _CallOutcome:
        """One call: STREAMING, then its end, each written to chat as it happens."""
        call_id, name = request.call_id, request.name
        if not await self.store.start_call(self.execution_id, call_id, self.clock.now_us()):
            return _CallOutcome(result=ToolResult(call_id=call_id, ok=False), status=None)
        await self._publish(
            [
                tools_item(
                    self.execution_id, seq, stamp, [self._call(call_id, name, ToolStatus.STREAMING)]
                )
            ]
        )
        output: dict[str, Any] | None = None
        result_json = error = ""
        remaining = max(0.0, (deadline_us - self.clock.now_us()) / 1_000_000)
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
            return _CallOutcome(result=ToolResult(call_id=call_id, ok=False), status=None)
        TOOL_CALLS.labels(name if name in TOOL_NAMES else "other", status.name.lower()).inc()
        log.info(
            "tool_call_finished",
            execution_id=self.execution_id,
            call_id=call_id,
            tool=name,
            status=status.name.lower(),
        )
        end = self._call(call_id, name, status, result_json=result_json, error=error)
        await self._publish([tools_item(self.execution_id, seq, stamp, [end])])
        ok = status is ToolStatus.SUCCEEDED
        return _CallOutcome(
            result=ToolResult(call_id=call_id, ok=ok, output=output, error=error), status=status
        )

    def _call(
        self, call_id: str, name: str, status: ToolStatus, **fields: Any
    ) -> flow_pb2.ToolCall:
        return tool_call(
            call_id, name, status, json_limit=self.config.limits.max_json_bytes, **fields
        )

    async def _publish(
        self,
        items: Sequence[flow_pb2.FlowItem],
        *,
        status: int = chat_pb2.MESSAGE_STATUS_UNSPECIFIED,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Write to the execution's message, then stream the items to Build clients."""
        message_id = await self.chat.upsert(
            app_id=self.execution.app_id,
            execution_id=self.execution_id,
            items=items,
            status=status,
            metadata=metadata,
        )
        if message_id != self.execution.message_id:
            DUPLICATE_MESSAGES.inc()
            log.error(
                "split_execution_detected",
                execution_id=self.execution_id,
                message_id=self.execution.message_id,
                other_message_id=message_id,
            )
        for item in items:
            self.emit(builder_pb2.BuildEvent(item=item))

    # --- the end ---------------------------------------------------------------------------

    async def _complete(self) -> None:
        """Every call succeeded: store the version, mark the message, deploy once."""
        bad = unsuccessful(await self.store.calls(self.execution_id))
        if bad:
            raise _Failed(ExecutionStatus.FAILED, failure_reason(bad))
        files = await self.workspace.snapshot()
        if not files:
            raise _Failed(ExecutionStatus.FAILED, "the model finished without writing any file")
        now = self.clock.now_us()
        version_id = await self.store.save_version(
            self.execution_id, self.execution.app_id, files, now
        )
        if (await self.store.get(self.execution_id)).status is not ExecutionStatus.RUNNING:
            raise _EndedElsewhere
        # Before Deploy, so the deployer's own "deployed" or "timeout" always lands later.
        await self._publish(
            [],
            status=chat_pb2.MESSAGE_STATUS_COMPLETED,
            metadata={"app_version_id": version_id, "deployment_status": "deploying"},
        )
        if await self.store.claim_deploy(self.execution_id, version_id, now):
            try:
                deployment_id = await self.deployer.deploy(
                    app_id=self.execution.app_id,
                    app_version_id=version_id,
                    execution_id=self.execution_id,
                    files=files,
                )
            except AppforgeError as exc:
                await self._publish([], metadata={"deployment_status": "not_deployed"})
                reason = f"could not request the deployment: {exc}"
                raise _Failed(ExecutionStatus.FAILED, reason) from exc
            await self.store.record_deployment(self.execution_id, deployment_id)
            log.info(
                "deployment_requested",
                execution_id=self.execution_id,
                app_version_id=version_id,
                deployment_id=deployment_id,
            )
        await self._end(ExecutionStatus.SUCCEEDED, "")

    async def _end(self, status: ExecutionStatus, reason: str) -> None:
        self._ending = True
        now = self.clock.now_us()
        grace = round(self.config.notice_grace * 1_000_000)
        try:
            ended = await self.store.finish(
                self.execution_id, status, error=reason, now_us=now, notice_due_us=now + grace
            )
        except AppforgeError as exc:  # the sweeper fails it once its heartbeat stops
            log.error("execution_end_failed", execution_id=self.execution_id, error=str(exc))
            return
        log.info(
            "execution_ended",
            execution_id=self.execution_id,
            status=status.name.lower(),
            reason=reason,
            first=ended,
        )
        if ended:
            EXECUTIONS.labels(status.name.lower()).inc()
            await self.notices.deliver(self.execution_id)

    async def _finished(self) -> None:
        """Tell Build clients how the execution ended, as stored."""
        finished = builder_pb2.BuildFinished(status=builder_pb2.EXECUTION_STATUS_FAILED)
        try:
            execution = await self.store.get(self.execution_id)
            finished = builder_pb2.BuildFinished(
                status=int(execution.status),  # type: ignore[arg-type]
                app_version_id=execution.app_version_id,
                deployment_id=execution.deployment_id,
                error=execution.error,
            )
        except AppforgeError as exc:
            finished.error = f"the execution's end could not be read: {exc}"
        self.emit(builder_pb2.BuildEvent(finished=finished))
