"""Builder use cases: start an execution and stream it, read, cancel, heartbeat.

An execution runs in a task this service owns, not in the Build call: a client that
disconnects stops receiving events, and the execution goes on to its end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from appforge.services.builder.domain import (
    AppVersion,
    BuildEvent,
    BuildFinished,
    BuildItem,
    BuildStarted,
    Execution,
    ExecutionStatus,
    MessageStatus,
    RecordedCall,
)
from appforge.services.builder.metrics import EXECUTIONS
from appforge.services.builder.models.base import Model
from appforge.services.builder.notices import FinalNotices
from appforge.services.builder.ports import ChatPort, DeployerPort
from appforge.services.builder.runner import (
    SHUTDOWN_REASON,
    ExecutionInput,
    ExecutionRunner,
    RunnerConfig,
)
from appforge.services.builder.settings import MODELS, BuilderSettings
from appforge.services.builder.store import ExecutionStore
from appforge.services.builder.text_stream import FlushPolicy, Sleep
from appforge.services.builder.workspace import Workspace
from appforge.services.common.clock import Clock
from appforge.services.common.errors import (
    AppforgeError,
    FailedPrecondition,
    InvalidArgument,
    Overloaded,
    Unavailable,
)
from appforge.services.common.flow import FlowItem
from appforge.services.common.logging import get_logger
from appforge.services.common.settings import Settings
from appforge.services.common.validation import check_size, optional_id, require_id

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class BuildInput:
    """A Build request: exactly one of `prompt` and `user_message_id`."""

    app_id: str
    prompt: str = ""
    user_message_id: str = ""
    model: str = ""
    request_id: str = ""


@dataclass(kw_only=True)
class _Run:
    runner: ExecutionRunner
    queue: asyncio.Queue[BuildEvent]  # the Build call's; it outlives a gone client


class BuilderService:
    """Executions of this replica, and the reads and cancels of any execution."""

    def __init__(
        self,
        *,
        store: ExecutionStore,
        chat: ChatPort,
        deployer: DeployerPort,
        models: Mapping[str, Model],
        workspace_for: Callable[[str], Workspace],
        clock: Clock,
        settings: Settings,
        builder: BuilderSettings,
        owner: str,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.chat = chat
        self.deployer = deployer
        self.models = dict(models)
        self.workspace_for = workspace_for
        self.clock = clock
        self.builder = builder
        self.owner = owner
        self.sleep = sleep  # how runners wait between writes of streamed text
        self.limits = settings.limits
        self.notices = FinalNotices(
            store,
            chat,
            clock,
            json_limit=self.limits.max_json_bytes,
            on_delivered=self._delivered,
        )
        self.config = RunnerConfig(
            tool_timeout=builder.tool_timeout,
            max_turns=builder.max_turns,
            limits=self.limits,
            flush=FlushPolicy(
                interval=builder.stream_flush_ms / 1000,
                max_chars=builder.stream_flush_chars,
            ),
        )
        self._runs: dict[str, _Run] = {}
        self._admitting = 0  # Builds past the admission check, not in `_runs` yet
        self._closing = False

    # --- Build ---------------------------------------------------------------------------

    async def build(self, request: BuildInput) -> AsyncIterator[BuildEvent]:
        """Start an execution and stream started, its items, then finished."""
        queue = await self.start(request)
        while True:
            event = await queue.get()
            yield event
            if isinstance(event, BuildFinished):
                return

    async def start(self, request: BuildInput) -> asyncio.Queue[BuildEvent]:
        """Start an execution; the queue of its events, `started` first.

        Past `max_running` executions here (those running and those being started), the
        Build is refused at once, before anything is written: under a burst, the excess
        fails fast with RESOURCE_EXHAUSTED instead of queueing for the caller's deadline
        and slowing every other RPC of this replica.
        """
        self._refuse_when_closing()
        limit = self.builder.max_running
        if len(self._runs) + self._admitting >= limit:
            raise Overloaded(
                f"this builder is running its limit of {limit} executions "
                "(APPFORGE_BUILDER_MAX_RUNNING); try again shortly"
            )
        self._admitting += 1
        try:
            return await self._start(request)
        finally:
            self._admitting -= 1

    async def _start(self, request: BuildInput) -> asyncio.Queue[BuildEvent]:
        model = self._model(request.model)
        app_id = require_id(request.app_id, "app_id", self.limits)
        optional_id(request.request_id, "request_id", self.limits)
        team_id = await self.chat.team_of(app_id)
        # Refused before the user message is posted. Two Builds racing for the team's last
        # slot both pass here; `store.create` refuses the second (its user message stays,
        # as one posted without a Build: it can be built later).
        await self.store.check_team_share(team_id, self.builder.team_max_running)
        if request.user_message_id:
            require_id(request.user_message_id, "user_message_id", self.limits)
            user = await self.chat.user_message(request.user_message_id)
            if user.app_id != app_id:
                raise FailedPrecondition(
                    f"message {user.id!r} belongs to another app", field="user_message_id"
                )
        else:
            if not request.prompt.strip():
                raise InvalidArgument("give a prompt or the id of a user message", field="prompt")
            check_size(request.prompt, "prompt", self.limits.max_user_content_bytes)
            user = await self.chat.post_user_message(
                app_id=app_id, content=request.prompt, request_id=request.request_id
            )
        execution_id = str(uuid.uuid4())
        now = self.clock.now_us()
        await self.store.create(
            execution_id=execution_id,
            app_id=app_id,
            model=model.name,
            prompt=user.content,
            user_message_id=user.id,
            owner=self.owner,
            now_us=now,
            team_id=team_id,
            team_limit=self.builder.team_max_running,
        )
        try:
            message_id = await self.chat.upsert(
                app_id=app_id,
                execution_id=execution_id,
                status=MessageStatus.PROCESSING,
                metadata={"execution_status": "running", "model": model.name},
            )
            await self.store.set_message(execution_id, message_id)
        except AppforgeError as exc:
            await self._fail_unstarted(execution_id, str(exc), now)
            raise
        if self._closing:  # close() began while chat answered: it would not see this run
            await self._fail_unstarted(execution_id, SHUTDOWN_REASON, now)
            await self.notices.deliver(execution_id)
            self._refuse_when_closing()
        runner = ExecutionRunner(
            ExecutionInput(
                execution_id=execution_id,
                app_id=app_id,
                prompt=user.content,
                message_id=message_id,
            ),
            model=model,
            workspace=self.workspace_for(execution_id),
            store=self.store,
            chat=self.chat,
            deployer=self.deployer,
            notices=self.notices,
            clock=self.clock,
            config=self.config,
            emit=lambda event: self._emit(execution_id, event),
            sleep=self.sleep,
        )
        queue: asyncio.Queue[BuildEvent] = asyncio.Queue()
        queue.put_nowait(
            BuildStarted(execution_id=execution_id, message_id=message_id, user_message_id=user.id)
        )
        self._runs[execution_id] = _Run(runner=runner, queue=queue)
        runner.start()
        return queue

    async def _fail_unstarted(self, execution_id: str, error: str, now_us: int) -> None:
        """End an execution no runner ever ran as FAILED, its notice due at once."""
        await self.store.finish(
            execution_id, ExecutionStatus.FAILED, error=error, now_us=now_us, notice_due_us=now_us
        )

    def _refuse_when_closing(self) -> None:
        if self._closing:
            raise Unavailable("the builder is shutting down; build again once it is back")

    def _model(self, name: str) -> Model:
        name = name or self.builder.model
        if name not in MODELS:
            raise InvalidArgument(f"must be one of {', '.join(MODELS)}", field="model")
        model = self.models.get(name)
        if model is None:
            raise FailedPrecondition(
                f"the {name} model is not configured on this builder", field="model"
            )
        return model

    def _emit(self, execution_id: str, event: BuildEvent) -> None:
        run = self._runs.get(execution_id)
        if run is None:
            return
        run.queue.put_nowait(event)
        if isinstance(event, BuildFinished):
            del self._runs[execution_id]

    def _delivered(self, execution_id: str, items: Sequence[FlowItem]) -> None:
        for item in items:
            self._emit(execution_id, BuildItem(execution_id=execution_id, item=item))

    # --- reads and cancels -----------------------------------------------------------------

    async def execution(self, execution_id: str) -> tuple[Execution, list[RecordedCall]]:
        require_id(execution_id, "execution_id", self.limits)
        execution = await self.store.get(execution_id)
        return execution, await self.store.calls(execution_id)

    async def version(self, app_version_id: str) -> AppVersion:
        require_id(app_version_id, "app_version_id", self.limits)
        return await self.store.version(app_version_id)

    async def cancel(self, execution_id: str, reason: str) -> tuple[Execution, list[RecordedCall]]:
        """Cancel a running execution: open calls CANCELLED, the message FAILED.

        Cancelling an execution that already failed or was cancelled returns it as it is;
        one that succeeded (its version is deploying) is FAILED_PRECONDITION.
        """
        require_id(execution_id, "execution_id", self.limits)
        check_size(reason, "reason", self.limits.max_name_length)
        execution = await self.store.get(execution_id)
        if execution.status is ExecutionStatus.SUCCEEDED:
            raise FailedPrecondition(
                "the execution succeeded already; cancel its deployment instead",
                field="execution_id",
            )
        now = self.clock.now_us()
        error = f"cancelled: {reason.strip() or 'no reason given'}"
        if await self.store.finish(
            execution_id, ExecutionStatus.CANCELLED, error=error, now_us=now, notice_due_us=now
        ):
            log.info("execution_cancelled", execution_id=execution_id, reason=reason)
            EXECUTIONS.labels("cancelled").inc()
            await self.notices.deliver(execution_id)
            self.ended_elsewhere(execution_id)
        return await self.execution(execution_id)

    # --- liveness --------------------------------------------------------------------------

    def ended_elsewhere(self, execution_id: str) -> None:
        """Stop this replica's runner of an execution someone else ended."""
        run = self._runs.get(execution_id)
        if run is not None:
            run.runner.stop()

    def task_of(self, execution_id: str) -> asyncio.Task[None] | None:
        """The task running an execution in this replica, if one is."""
        run = self._runs.get(execution_id)
        return run.runner.task if run is not None else None

    @property
    def running(self) -> list[str]:
        return list(self._runs)

    async def heartbeat_once(self) -> None:
        """Keep this replica's executions alive; stop runners of those ended elsewhere."""
        ids = self.running
        alive = await self.store.heartbeat(self.owner, ids, self.clock.now_us())
        for execution_id in set(ids) - alive:
            if execution_id in self._runs:
                log.info("execution_ended_elsewhere", execution_id=execution_id)
                self.ended_elsewhere(execution_id)

    async def close(self) -> None:
        """Refuse new builds and end every running execution here as FAILED with the
        shutdown reason: each writes its final message to chat and sends `finished` to
        its Build clients. Returns once every runner is done (bound it by the caller)."""
        self._closing = True
        # One turn of the loop: a runner task created just now enters its coroutine
        # first, so cancelling it runs its shutdown path instead of never starting it.
        await asyncio.sleep(0)
        # No run registers once `_closing` is set (`start` checks it with no await before
        # `runner.start()`), so one pass ends them all.
        runners = [run.runner for run in self._runs.values()]
        tasks = [r.task for r in runners if r.task is not None and not r.task.done()]
        if not tasks:
            return
        log.info("ending_executions_on_shutdown", executions=len(tasks))
        for runner in runners:
            runner.shut_down()
        await asyncio.gather(*tasks, return_exceptions=True)
