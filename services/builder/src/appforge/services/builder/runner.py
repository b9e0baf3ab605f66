"""One execution, from the model's first turn to the deploy request.

Each turn of the model becomes flow items: its text a `message` item, written piece by piece
while the model generates it (`TextStream`), then its tool calls one `tools` item whose
calls start PENDING. seq and stamps come from the execution's row (`ExecutionStore.allocate`),
never from sleeping: the text item's when its first text arrives, the tools item's once the
text is all written. The calls of a batch run concurrently
(`BatchRunner`), each under the deadline stored with it, and every state change is
written at once to the execution's one assistant message and streamed to Build clients
(`FlowPublisher`). When the model is done and every call succeeded, the files become an
app version and Deploy is called once.

Whoever ends an execution (this runner, CancelExecution, the sweeper) delivers its final
notice; the outbox redelivers it if chat was down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from appforge.services.builder.domain import (
    BuildFinished,
    ExecutionStatus,
    MessageStatus,
    deadline_reason,
    failure_reason,
    unique_calls,
    unsuccessful,
)
from appforge.services.builder.metrics import EXECUTIONS
from appforge.services.builder.models.base import (
    Exchange,
    Model,
    ModelError,
    ToolRequest,
    Turn,
)
from appforge.services.builder.notices import FinalNotices
from appforge.services.builder.ports import ChatPort, DeployerPort
from appforge.services.builder.publisher import Emit, FlowPublisher
from appforge.services.builder.store import ExecutionStore
from appforge.services.builder.text_stream import FlushPolicy, Sleep, TextStream
from appforge.services.builder.tool_runs import BatchRunner, CallOutcome
from appforge.services.builder.workspace import Workspace
from appforge.services.common import deadlines, tracing
from appforge.services.common.clock import Clock
from appforge.services.common.errors import AppforgeError
from appforge.services.common.flow import FlowItem, ToolStatus
from appforge.services.common.logging import get_logger
from appforge.services.common.secrets import redact
from appforge.services.common.settings import Limits

log = get_logger(__name__)

SHUTDOWN_REASON = "the builder shut down during the execution"


@dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    """Deadlines and limits of an execution."""

    tool_timeout: float
    max_turns: int
    limits: Limits
    # A final notice this runner failed to deliver is redelivered by the outbox after this.
    notice_grace: float = 10.0
    flush: FlushPolicy = field(default_factory=FlushPolicy)


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
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.execution = execution
        self.model = model
        self.workspace = workspace
        self.store = store
        self.deployer = deployer
        self.notices = notices
        self.clock = clock
        self.config = config
        self.emit = emit
        self.sleep = sleep  # the text streams' timers
        self.publisher = FlowPublisher(
            app_id=execution.app_id,
            execution_id=execution.execution_id,
            message_id=execution.message_id,
            chat=chat,
            emit=emit,
        )
        self.batches = BatchRunner(
            execution_id=execution.execution_id,
            store=store,
            workspace=workspace,
            clock=clock,
            publisher=self.publisher,
            tool_timeout=config.tool_timeout,
            json_limit=config.limits.max_json_bytes,
        )
        self._task: asyncio.Task[None] | None = None
        self._text: TextStream | None = None  # the current turn's, until it is all written
        self._stopped = False
        self._ending = False  # this runner is ending the execution itself

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(  # it outlives the Build call: not bound by its deadline
            self.run(), name=f"execution-{self.execution_id}", context=deadlines.detached()
        )
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
        self.shut_down()

    def shut_down(self) -> None:
        """The builder is stopping: end the execution as FAILED with that reason.

        A no-op once the runner is ending it itself: its end is on the way, and
        cancelling would cut off its final notice or its `finished` event.
        """
        if self._ending:
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def run(self) -> None:
        """Run to the end; never raises except to pass on a shutdown's cancellation. One
        span (a child of the Build's, when traced) holds all of it."""
        with tracing.span(
            "builder execution", attributes={tracing.EXECUTION_ID: self.execution_id}
        ):
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
            # No one in this process will retry a notice chat did not take now: make it
            # due at once, for the next sweep of any builder (this one's next start).
            await self._end(ExecutionStatus.FAILED, SHUTDOWN_REASON, notice_after=0.0)
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
        limit = self.config.limits.max_calls_per_batch
        for _ in range(self.config.max_turns):
            turn = await self._next_turn(history)
            requests = unique_calls(turn.tool_calls, used_ids)
            if len(requests) > limit:
                raise _Failed(
                    ExecutionStatus.FAILED,
                    f"the model asked for {len(requests)} tool calls in one batch; "
                    f"the limit is {limit}",
                )
            if not requests:
                return
            outcomes = await self._run_batch(requests)
            _check_outcomes(requests, outcomes)
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

    async def _next_turn(self, history: Sequence[Exchange]) -> Turn:
        """The model's next turn, its text written to the flow as it streams in."""
        stream = TextStream(
            allocate=self._allocate,
            write=self._write_piece,
            policy=self.config.flush,
            limit_bytes=self.config.limits.max_text_bytes,
            sleep=self.sleep,
        )
        self._text = stream
        try:
            turn = await self.model.next_turn(self.execution.prompt, history, on_text=stream.add)
            await stream.finish(turn.text)
        finally:
            await stream.close()
        self._text = None
        return turn

    async def _allocate(self) -> tuple[int, int]:
        [(seq, stamp)] = await self.store.allocate(self.execution_id, 1, self.clock.now_us())
        return seq, stamp

    async def _write_piece(self, item: FlowItem) -> None:
        await self.publisher.publish([item])

    async def _keep_streamed_text(self) -> None:
        """A turn ended in an error: write the text it had streamed, so none of it is lost."""
        stream, self._text = self._text, None
        if stream is None:
            return
        try:
            await stream.finish()
        except Exception as exc:  # the execution ends anyway, with its own reason
            log.warning("streamed_text_lost", execution_id=self.execution_id, error=str(exc))

    async def _run_batch(self, requests: Sequence[ToolRequest]) -> list[CallOutcome]:
        """Write the batch as a new tools item (after the turn's text), then run it."""
        now = self.clock.now_us()
        [(seq, stamp)] = await self.store.allocate(self.execution_id, 1, now)
        batch = await self.batches.record(seq, stamp, requests, now)
        await self.publisher.publish([batch.item])
        return await self.batches.run(batch)

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
        await self.publisher.publish(
            [],
            status=MessageStatus.COMPLETED,
            metadata={"app_version_id": version_id, "deployment_status": "deploying"},
        )
        if await self.store.claim_deploy(self.execution_id, version_id, now):
            await self._deploy(version_id, files)
        await self._end(ExecutionStatus.SUCCEEDED, "")

    async def _deploy(self, version_id: str, files: Sequence[tuple[str, bytes]]) -> None:
        """The execution's one Deploy call (the caller holds the deploy-once claim)."""
        try:
            deployment_id = await self.deployer.deploy(
                app_id=self.execution.app_id,
                app_version_id=version_id,
                execution_id=self.execution_id,
                files=files,
            )
        except AppforgeError as exc:
            await self.publisher.publish([], metadata={"deployment_status": "not_deployed"})
            reason = f"could not request the deployment: {exc}"
            raise _Failed(ExecutionStatus.FAILED, reason) from exc
        await self.store.record_deployment(self.execution_id, deployment_id)
        log.info(
            "deployment_requested",
            execution_id=self.execution_id,
            app_version_id=version_id,
            deployment_id=deployment_id,
        )

    async def _end(
        self, status: ExecutionStatus, reason: str, *, notice_after: float | None = None
    ) -> None:
        """End the execution and deliver its notice; the outbox has it after `notice_after`
        seconds (the config's grace by default) if chat does not take it now."""
        self._ending = True
        reason = redact(reason)  # it may quote an endpoint that echoed the API key
        await self._keep_streamed_text()
        now = self.clock.now_us()
        after = self.config.notice_grace if notice_after is None else notice_after
        grace = round(after * 1_000_000)
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
        try:
            execution = await self.store.get(self.execution_id)
        except AppforgeError as exc:
            finished = BuildFinished(
                status=ExecutionStatus.FAILED,
                error=f"the execution's end could not be read: {exc}",
            )
        else:
            finished = BuildFinished(
                status=execution.status,
                app_version_id=execution.app_version_id,
                deployment_id=execution.deployment_id,
                error=execution.error,
            )
        self.emit(finished)


def _check_outcomes(requests: Sequence[ToolRequest], outcomes: Sequence[CallOutcome]) -> None:
    """Raise if the batch's end ends the execution: ended elsewhere, or a call timed out."""
    if any(o.status is None for o in outcomes):
        raise _EndedElsewhere
    timed_out = [
        r for r, o in zip(requests, outcomes, strict=True) if o.status is ToolStatus.TIMED_OUT
    ]
    if timed_out:
        first = timed_out[0]
        raise _Failed(ExecutionStatus.TIMED_OUT, deadline_reason(first.call_id, first.name))
