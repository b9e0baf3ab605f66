"""An in-process builder over gRPC, wired to the real chat fixture, with test doubles for
what a test must control: the deployer, the model, the clock, and how tools run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from google.protobuf import json_format

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2
from appforge.cli import installed
from appforge.services.builder.bootstrap import BuilderRuntime, build_builder
from appforge.services.builder.clients import GrpcChat
from appforge.services.builder.models.base import (
    WRITE_FILE,
    Exchange,
    Model,
    TextSink,
    ToolRequest,
    Turn,
)
from appforge.services.builder.models.scripted import ScriptedModel
from appforge.services.builder.ports import ChatPort
from appforge.services.builder.sandbox import Sandbox, SandboxLimits
from appforge.services.builder.settings import BuilderSettings
from appforge.services.builder.workspace import SandboxWorkspace, Workspace
from appforge.services.common import db, migrate
from appforge.services.common.clock import Clock
from appforge.services.common.settings import Settings

BuildCall = grpc.aio.UnaryStreamCall[builder_pb2.BuildRequest, builder_pb2.BuildEvent]
# What `read()` answers once a stream has ended (grpc-stubs does not declare it).
EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]


@dataclass(kw_only=True)
class RecordingDeployer:
    """A deployer that records each Deploy and answers with a deployment id."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    async def deploy(
        self,
        *,
        app_id: str,
        app_version_id: str,
        execution_id: str,
        files: Sequence[tuple[str, bytes]],
    ) -> str:
        self.calls.append(
            {
                "app_id": app_id,
                "app_version_id": app_version_id,
                "execution_id": execution_id,
                "files": dict(files),
            }
        )
        return f"deployment-{len(self.calls)}"


class OneBatchModel:
    """Writes the given files in one batch, then says it is done. Streams nothing: its
    text comes with its turn, all at once."""

    name = "scripted"

    def __init__(self, files: Mapping[str, str], *, closing: str = "Done.") -> None:
        self.files = dict(files)
        self.closing = closing

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn:
        if history:
            return Turn(text=self.closing)
        return Turn(
            text="Writing the files.",
            tool_calls=tuple(
                ToolRequest(call_id=f"w{n}", name=WRITE_FILE, arguments={"path": p, "content": c})
                for n, (p, c) in enumerate(self.files.items())
            ),
        )


class GatedWorkspace:
    """A sandbox whose tool calls each wait for their own gate before running.

    `arrived` is set once `expected` calls are waiting; `release(call order)` then lets
    them finish in any order the test chooses. Gates left closed hang their calls.
    """

    def __init__(self, inner: Workspace, expected: int) -> None:
        self.inner = inner
        self.expected = expected
        self.gates: dict[str, asyncio.Event] = {}
        self.arrived = asyncio.Event()

    async def run(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        key = str(arguments.get("path", name))
        gate = self.gates.setdefault(key, asyncio.Event())
        if len(self.gates) >= self.expected:
            self.arrived.set()
        await gate.wait()
        return await self.inner.run(name, arguments)

    def release(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.gates[key].set()

    async def snapshot(self) -> list[tuple[str, bytes]]:
        return await self.inner.snapshot()

    async def discard(self) -> None:
        await self.inner.discard()


@dataclass(kw_only=True)
class BuilderHandle:
    """A running in-process builder and a client for it."""

    runtime: BuilderRuntime
    channel: grpc.aio.Channel
    stub: builder_pb2_grpc.BuilderServiceAsyncStub
    deployer: RecordingDeployer
    sandboxes: Path
    workspaces: dict[str, Workspace]


UNBOUNDED_TEAM_SHARE = 100_000


@contextlib.asynccontextmanager
async def running_builder(
    *,
    database_url: str,
    chat_address: str,
    tmp: Path,
    clock: Clock | None = None,
    models: dict[str, Model] | None = None,
    gate: int | None = None,
    sandbox_limits: SandboxLimits | None = None,
    wrap_chat: Callable[[ChatPort], ChatPort] | None = None,
    **builder_settings: Any,
) -> AsyncIterator[BuilderHandle]:
    """A builder on `database_url` talking to chat at `chat_address`.

    Its sweeper and heartbeat are not started: tests sweep by hand (`sweep_once`). With
    `gate`, every execution's tools run in a `GatedWorkspace` expecting `gate` calls.
    """
    settings = Settings(data_dir=tmp, shutdown_grace=0.5)
    engine = db.create_engine(database_url)
    try:
        await migrate.upgrade(engine, installed.histories())
    except BaseException:
        await engine.dispose()  # or its connection outlives the test that failed here
        raise
    sandboxes = tmp / "sandboxes"
    workspaces: dict[str, Workspace] = {}

    def workspace_for(execution_id: str) -> Workspace:
        workspace: Workspace = SandboxWorkspace(
            Sandbox(sandboxes / execution_id, sandbox_limits or SandboxLimits())
        )
        if gate is not None:
            workspace = GatedWorkspace(workspace, gate)
        workspaces[execution_id] = workspace
        return workspace

    deployer = RecordingDeployer()
    # The session's database keeps other tests' executions of the same team: only the test
    # of the fair share itself sets a small one.
    builder_settings.setdefault("team_max_running", UNBOUNDED_TEAM_SHARE)
    runtime = build_builder(
        settings,
        dataclasses.replace(BuilderSettings(), **builder_settings),
        host="127.0.0.1",
        port=0,
        engine=engine,
        clock=clock,
        chat=wrap_chat(GrpcChat(chat_address)) if wrap_chat else GrpcChat(chat_address),
        deployer=deployer,
        models=models if models is not None else {"scripted": ScriptedModel()},
        workspace_for=workspace_for,
        owner="builder-test",
    )
    await runtime.server.start()
    channel = grpc.aio.insecure_channel(runtime.server.address)
    try:
        yield BuilderHandle(
            runtime=runtime,
            channel=channel,
            stub=builder_pb2_grpc.BuilderServiceStub(channel),
            deployer=deployer,
            sandboxes=sandboxes,
            workspaces=workspaces,
        )
    finally:
        await channel.close(None)
        await runtime.server.stop()
        await runtime.close()


async def next_event(stream: BuildCall) -> builder_pb2.BuildEvent | None:
    """The next event of a Build call; None once the stream has ended."""
    event = await stream.read()
    if event is EOF:
        return None
    assert isinstance(event, builder_pb2.BuildEvent), event
    return event


async def read_started(stream: BuildCall) -> builder_pb2.BuildStarted:
    """The first event of a Build call, which must be `started`."""
    event = await next_event(stream)
    assert event is not None and event.HasField("started"), event
    return event.started


async def collect(stream: BuildCall, timeout: float = 20.0) -> list[builder_pb2.BuildEvent]:
    """Every (remaining) event of a Build call, up to and including `finished`."""
    events: list[builder_pb2.BuildEvent] = []
    async with asyncio.timeout(timeout):
        while (event := await next_event(stream)) is not None:
            events.append(event)
    assert events and events[-1].HasField("finished"), events
    return events


def metadata_value(message: chat_pb2.ChatMessage, key: str) -> object:
    """One metadata value of a message as plain Python (a Struct becomes a dict)."""
    return json_format.MessageToDict(message.metadata)[key]


def metadata_text(message: chat_pb2.ChatMessage, key: str) -> str:
    """A metadata value of a message that must be a string."""
    value = metadata_value(message, key)
    assert isinstance(value, str), (key, value)
    return value


async def start_gated(
    handle: BuilderHandle, app_id: str, prompt: str = "build a calculator"
) -> tuple[BuildCall, builder_pb2.BuildStarted, GatedWorkspace]:
    """Start a Build on a gated builder and wait until all its gated calls are waiting:
    (the Build call, its `started`, the execution's workspace)."""
    stream = handle.stub.Build(builder_pb2.BuildRequest(app_id=app_id, prompt=prompt))
    started = await read_started(stream)
    workspace = handle.workspaces[started.execution_id]
    assert isinstance(workspace, GatedWorkspace)
    await asyncio.wait_for(workspace.arrived.wait(), 10)
    return stream, started, workspace
