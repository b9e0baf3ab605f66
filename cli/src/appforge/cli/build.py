"""`appforge build PROMPT`: create the app if needed, run Build, follow the deployment.

Renders live progress with rich (flow items as they arrive, text growing as it streams,
each tool call's state, the deployment's attempts) and ends with the URL and a one-line
summary; on a pipe each item is printed once, whole, when it is complete (`PipedView`).
`--json` prints every event as a JSON line instead (a streamed text item as one `item` line
per piece, `message.offset` saying where the piece goes), always ending with a `result` line.
Exit status: 0 deployed, 1 the build or the deployment failed, 2 a request was refused (bad
input), 3 a service could not be reached. Every wait is bounded: a service not reachable
within `connect_timeout` (a deployer that was followed and then lost: `reconnect_timeout`,
time for it to restart) ends the command.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.live import Live

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.cli.build_view import PipedView, Progress, render
from appforge.cli.channels import CHANNEL_OPTIONS, Unreachable, connect, console_for
from appforge.services.common.auth import Metadata
from appforge.services.common.errors import AppforgeError, InvalidArgument
from appforge.services.common.settings import Limits
from appforge.services.common.tls import TlsSettings, open_channel
from appforge.services.common.validation import check_size

EXIT_DEPLOYED, EXIT_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3

_DEPLOY_DONE = {
    deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED,
    deployer_pb2.DEPLOYMENT_STATUS_FAILED,
    deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT,
    deployer_pb2.DEPLOYMENT_STATUS_CANCELLED,
}
_UNARY_TIMEOUT = 30.0  # seconds for one unary request to a reachable service


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """What `appforge build` was asked."""

    prompt: str
    app: str
    team: str
    chat: str
    builder: str
    deployer: str
    model: str = ""
    json: bool = False
    timeout: float = 600.0
    connect_timeout: float = 10.0
    reconnect_timeout: float = 30.0
    tls: TlsSettings | None = None  # APPFORGE_TLS_*: None, plaintext
    credentials: Metadata | None = None  # the token every call carries (`tokens.py`)

    def channel(self, address: str) -> grpc.aio.Channel:
        return open_channel(address, self.tls, CHANNEL_OPTIONS, self.credentials)


def _json_line(out: TextIO, kind: str, message: Message | None = None, **extra: Any) -> None:
    record: dict[str, Any] = {"event": kind}
    if message is not None:
        record.update(json_format.MessageToDict(message, preserving_proto_field_name=True))
    record.update(extra)
    out.write(json.dumps(record) + "\n")
    out.flush()


def validate_prompt(prompt: str, limits: Limits) -> str:
    """The rules chat and the builder apply to a prompt, checked before anything is created."""
    if not prompt.strip():
        raise InvalidArgument("must not be empty", field="prompt")
    check_size(prompt, "prompt", limits.max_user_content_bytes)
    return prompt


async def run_build(
    options: BuildOptions,
    out: TextIO,
    err: TextIO,
    *,
    limits: Limits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run the whole cycle; the exit status."""
    progress = Progress()
    console = console_for(out)

    def emit(kind: str, message: Message | None) -> None:
        if options.json:
            _json_line(out, kind, message)

    try:
        validate_prompt(options.prompt, limits or Limits())
    except AppforgeError as exc:
        return _fail(console, options, out, err, progress, EXIT_REFUSED, "refused", str(exc))
    try:
        async with asyncio.timeout(options.timeout):
            if options.json:
                return await _cycle(options, progress, emit, lambda: None, out, clock)
            if not console.is_terminal:
                piped = PipedView(console)
                try:
                    code = await _cycle(
                        options, progress, emit, lambda: piped.update(progress), out, clock
                    )
                finally:
                    piped.close(progress)
            else:
                with Live(render(progress), console=console, refresh_per_second=12) as live:
                    code = await _cycle(
                        options, progress, emit, lambda: live.update(render(progress)), out, clock
                    )
                    live.update(render(progress))
            _print_outcome(console, progress, code)
            return code
    except TimeoutError:
        message = f"gave up after {options.timeout:g} s"
        if progress.calling:
            message = f"{progress.calling}: {message}"
        return _fail(console, options, out, err, progress, EXIT_FAILED, "timed_out", message)
    except Unreachable as exc:
        return _fail(
            console, options, out, err, progress, EXIT_UNREACHABLE, "unreachable", str(exc)
        )
    except grpc.aio.AioRpcError as exc:
        unreachable = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        message = f"{progress.calling}: {exc.code().name}: {exc.details()}"
        if unreachable:
            return _fail(
                console, options, out, err, progress, EXIT_UNREACHABLE, "unreachable", message
            )
        return _fail(console, options, out, err, progress, EXIT_REFUSED, "refused", message)


def _fail(
    console: Console,
    options: BuildOptions,
    out: TextIO,
    err: TextIO,
    progress: Progress,
    code: int,
    status: str,
    message: str,
) -> int:
    """Say why the command stops (stderr, and the `result` line under --json); its exit status."""
    if options.json:
        _json_line(
            out,
            "result",
            status=status,
            error=message,
            exit=code,
            summary=progress.summary(),
        )
    err.write(f"appforge build: {message}\n")
    err.flush()
    return code


async def _cycle(
    options: BuildOptions,
    progress: Progress,
    emit: Callable[[str, Message | None], None],
    refresh: Callable[[], None],
    out: TextIO,
    clock: Callable[[], float],
) -> int:
    async with (
        options.channel(options.chat) as chat_channel,
        options.channel(options.builder) as builder_channel,
        options.channel(options.deployer) as deployer_channel,
    ):
        chat = chat_pb2_grpc.ChatServiceStub(chat_channel)
        progress.calling = f"chat at {options.chat}"
        await connect(chat_channel, progress.calling, options.connect_timeout, fail_fast=True)
        app = await chat.CreateApp(
            chat_pb2.CreateAppRequest(team_id=options.team, name=options.app, return_existing=True),
            timeout=_UNARY_TIMEOUT,
        )
        progress.app = app
        emit("app", app)
        builder = builder_pb2_grpc.BuilderServiceStub(builder_channel)
        progress.calling = f"builder at {options.builder}"
        await connect(builder_channel, progress.calling, options.connect_timeout, fail_fast=True)
        request = builder_pb2.BuildRequest(
            app_id=app.id, prompt=options.prompt, model=options.model
        )
        async for event in builder.Build(request):
            kind = event.WhichOneof("event")
            if kind == "started":
                progress.execution_id = event.started.execution_id
                emit("started", event.started)
            elif kind == "item":
                progress.add(event.item)
                emit("item", event.item)
            elif kind == "finished":
                progress.finished = event.finished
                emit("finished", event.finished)
            refresh()
        finished = progress.finished
        if finished is None or finished.status != builder_pb2.EXECUTION_STATUS_SUCCEEDED:
            if options.json:
                _json_line(
                    out,
                    "result",
                    status="build_failed",
                    error=_build_error(progress),
                    exit=EXIT_FAILED,
                    summary=progress.summary(),
                )
            return EXIT_FAILED
        progress.calling = f"deployer at {options.deployer}"
        watch = deployer_pb2.WatchDeploymentRequest(deployment_id=finished.deployment_id)
        follow = _Follow(
            channel=deployer_channel, who=progress.calling, options=options, clock=clock
        )
        await follow.run(watch, progress, emit, refresh)
        deployment = progress.deployment
        deployed = (
            deployment is not None and deployment.status == deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
        )
        code = EXIT_DEPLOYED if deployed else EXIT_FAILED
        if options.json:
            _json_line(
                out,
                "result",
                status="deployed" if deployed else "deploy_failed",
                url=deployment.url if deployment and deployed else "",
                error="" if deployed else _deploy_error(deployment),
                exit=code,
                summary=progress.summary(),
            )
        return code


@dataclass(frozen=True, kw_only=True)
class _Follow:
    """Follow a deployment to its end, watching again if the deployer restarts (the deployment
    is a durable job: another deployer process carries it on).

    A deployer never reached gets `connect_timeout` seconds; one that was followed and then
    lost gets `reconnect_timeout` to come back. A reachable one is followed however slow it is:
    only the overall --timeout ends that.
    """

    channel: grpc.aio.Channel
    who: str
    options: BuildOptions
    clock: Callable[[], float]

    async def run(
        self,
        watch: deployer_pb2.WatchDeploymentRequest,
        progress: Progress,
        emit: Callable[[str, Message | None], None],
        refresh: Callable[[], None],
    ) -> None:
        deployer = deployer_pb2_grpc.DeployerServiceStub(self.channel)
        grace = self.options.connect_timeout
        lost_at = self.clock()
        followed_once = False
        while True:
            left = grace - (self.clock() - lost_at)
            await connect(self.channel, self.who, left, fail_fast=not followed_once, grace=grace)
            followed = False
            try:
                async for state in deployer.WatchDeployment(watch):
                    followed = True
                    progress.deployment = state
                    emit("deployment", state)
                    refresh()
                    if state.status in _DEPLOY_DONE:
                        return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            if followed:  # it was there: give it time to restart, counted from now
                followed_once = True
                grace = max(self.options.reconnect_timeout, self.options.connect_timeout)
                lost_at = self.clock()
            elif self.clock() - lost_at >= grace:  # connected, yet it answers UNAVAILABLE
                raise Unreachable(f"{self.who}: unavailable (gave up after {grace:g} s)")
            await asyncio.sleep(0.2)  # a short pause between watches, bounded by the grace


def _build_error(progress: Progress) -> str:
    finished = progress.finished
    if finished is None:
        return "the build stream ended without a result"
    status = builder_pb2.ExecutionStatus.Name(finished.status).removeprefix("EXECUTION_STATUS_")
    return f"{status.lower()}: {finished.error}" if finished.error else status.lower()


def _deploy_error(deployment: deployer_pb2.Deployment | None) -> str:
    if deployment is None:
        return "the deployment's progress could not be followed"
    status = deployer_pb2.DeploymentStatus.Name(deployment.status).removeprefix(
        "DEPLOYMENT_STATUS_"
    )
    return f"{status.lower()}: {deployment.error}" if deployment.error else status.lower()


def _print_outcome(console: Console, progress: Progress, code: int) -> None:
    app = progress.app.name if progress.app else "?"
    if code == EXIT_DEPLOYED and progress.deployment is not None:
        console.print(f"[green]✔ deployed[/] {app}: {progress.summary()}")
        console.print(progress.deployment.url, soft_wrap=True, highlight=False)
    elif progress.finished is not None and progress.finished.deployment_id:
        console.print(f"[red]✖ deployment {_deploy_error(progress.deployment)}[/] ({app})")
    else:
        console.print(f"[red]✖ build {_build_error(progress)}[/] ({app})")
