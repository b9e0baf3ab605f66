"""How a build execution ends other than in success, and how its runner's liveness is judged:
tool deadlines, the sweeper, leases and heartbeats, cancellation, and sandbox refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.builder.models.base import WRITE_FILE, Exchange, TextSink, ToolRequest, Turn
from appforge.services.builder.sandbox import SandboxLimits
from appforge.services.common.clock import FrozenClock
from tests.integration.builder_fixtures import (
    OneBatchModel,
    collect,
    metadata_text,
    metadata_value,
    running_builder,
    start_gated,
)
from tests.integration.builder_service_helpers import NOW, assistant_messages, build
from tests.integration.conftest import ChatHandle, NewApp


async def test_a_tool_past_its_deadline_times_out_and_fails_the_message(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    async with running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp_path,
        models={"scripted": OneBatchModel({"slow.html": "<p>slow</p>"})},
        gate=1,  # the gate is never opened: the call hangs
        tool_timeout=0.2,
    ) as handle:
        app = await new_app()
        events = await collect(handle.stub.Build(build(app.id)))
    finished = events[-1].finished
    assert finished.status == builder_pb2.EXECUTION_STATUS_TIMED_OUT
    assert "passed its deadline" in finished.error
    [message] = await assistant_messages(chat, app.id)
    assert message.status == chat_pb2.MESSAGE_STATUS_FAILED
    [call] = message.flow[1].tools.calls
    assert call.status == flow_pb2.TOOL_STATUS_TIMED_OUT
    assert "deadline" in metadata_text(message, "error")
    assert handle.deployer.calls == []


async def test_the_sweeper_times_out_a_call_its_runner_left_hanging(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    clock = FrozenClock(NOW)
    async with running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp_path,
        clock=clock,
        models={"scripted": OneBatchModel({"slow.html": "<p>slow</p>"})},
        gate=1,
        tool_timeout=3600,  # the runner's own timer would wait an hour
    ) as handle:
        app = await new_app()
        stream, started, _ = await start_gated(handle, app.id)
        clock.advance(3600 * 1_000_000 + 1)  # past the stored deadline
        report = await handle.runtime.sweeper.sweep_once()  # one sweep
        assert started.execution_id in report.timed_out
        events = await collect(stream)
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_TIMED_OUT
    message = await chat.stub.GetMessage(chat_pb2.GetMessageRequest(message_id=started.message_id))
    assert message.status == chat_pb2.MESSAGE_STATUS_FAILED
    assert message.flow[1].tools.calls[0].status == flow_pb2.TOOL_STATUS_TIMED_OUT
    assert "slow.html" not in metadata_text(message, "error")  # names the call, not its args
    assert "w0 (write_file) passed its deadline" in metadata_text(message, "error")


async def test_executions_of_a_dead_builder_are_failed_by_a_surviving_one(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    clock = FrozenClock(NOW)
    async with (
        running_builder(
            database_url=backend[1],
            chat_address=chat.address,
            tmp=tmp_path / "a",
            clock=clock,
            models={"scripted": OneBatchModel({"a.html": "<p>a</p>"})},
            gate=1,
            execution_lease=30,
        ) as doomed,
        running_builder(
            database_url=backend[1],
            chat_address=chat.address,
            tmp=tmp_path / "b",
            clock=clock,
            execution_lease=30,
        ) as survivor,
    ):
        app = await new_app()
        stream, started, workspace = await start_gated(doomed, app.id)
        stream.cancel()
        clock.advance(10 * 1_000_000)
        assert started.execution_id not in (await survivor.runtime.sweeper.sweep_once()).abandoned
        clock.advance(25 * 1_000_000)  # 35 s without a heartbeat: the lease (30 s) passed
        report = await survivor.runtime.sweeper.sweep_once()
        assert started.execution_id in report.abandoned
        message = await chat.stub.GetMessage(
            chat_pb2.GetMessageRequest(message_id=started.message_id)
        )
        assert message.status == chat_pb2.MESSAGE_STATUS_FAILED
        assert "stopped (no heartbeat for 30 s)" in metadata_text(message, "error")
        [call] = message.flow[1].tools.calls
        assert call.status == flow_pb2.TOOL_STATUS_CANCELLED
        execution = await survivor.stub.GetExecution(
            builder_pb2.GetExecutionRequest(execution_id=started.execution_id)
        )
        assert execution.status == builder_pb2.EXECUTION_STATUS_FAILED
        task = doomed.runtime.service.task_of(started.execution_id)
        assert task is not None
        workspace.release(["a.html"])  # the "dead" runner wakes: its late end changes nothing
        await asyncio.wait_for(task, 10)
        after = await chat.stub.GetMessage(chat_pb2.GetMessageRequest(message_id=message.id))
        assert after.status == chat_pb2.MESSAGE_STATUS_FAILED
        assert after.flow[1].tools.calls[0].status == flow_pb2.TOOL_STATUS_CANCELLED
        assert doomed.deployer.calls == []


class HeartbeatDuringTheEnd:
    """A chat client that lets the builder heartbeat while the final notice is on its way:
    the execution's row no longer says RUNNING, but its runner is still finishing it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.service: Any = None
        self.beats = 0

    async def post_user_message(self, **kw: Any) -> Any:
        return await self.inner.post_user_message(**kw)

    async def team_of(self, app_id: str) -> str:
        return str(await self.inner.team_of(app_id))

    async def user_message(self, message_id: str) -> Any:
        return await self.inner.user_message(message_id)

    async def upsert(self, **kw: Any) -> str:
        final = "execution_status" in (kw.get("metadata") or {}) and kw.get("items")
        if final and self.service is not None:
            await self.service.heartbeat_once()
            self.beats += 1
        return str(await self.inner.upsert(**kw))

    async def close(self) -> None:
        await self.inner.close()


async def test_a_heartbeat_during_the_runners_own_end_does_not_cut_it_off(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    wrapper: HeartbeatDuringTheEnd | None = None

    def wrap(inner: Any) -> Any:
        nonlocal wrapper
        wrapper = HeartbeatDuringTheEnd(inner)
        return wrapper

    async with running_builder(
        database_url=backend[1], chat_address=chat.address, tmp=tmp_path, wrap_chat=wrap
    ) as handle:
        assert wrapper is not None
        wrapper.service = handle.runtime.service
        app = await new_app()
        events = await collect(handle.stub.Build(build(app.id)))
        assert wrapper.beats == 1
        assert handle.runtime.service.running == []
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED
    [message] = await assistant_messages(chat, app.id)
    assert dict(message.metadata)["execution_status"] == "succeeded"


async def test_cancel_ends_running_tools_and_fails_the_message(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    async with running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp_path,
        models={"scripted": OneBatchModel({"x.html": "<p>x</p>", "y.html": "<p>y</p>"})},
        gate=2,
    ) as handle:
        app = await new_app()
        stream, started, _ = await start_gated(handle, app.id)
        cancelled = await handle.stub.CancelExecution(
            builder_pb2.CancelExecutionRequest(
                execution_id=started.execution_id, reason="changed my mind"
            )
        )
        assert cancelled.status == builder_pb2.EXECUTION_STATUS_CANCELLED
        assert cancelled.error == "cancelled: changed my mind"
        assert {c.status for c in cancelled.tool_calls} == {flow_pb2.TOOL_STATUS_CANCELLED}
        events = await collect(stream)
        again = await handle.stub.CancelExecution(
            builder_pb2.CancelExecutionRequest(execution_id=started.execution_id)
        )
        assert again.status == builder_pb2.EXECUTION_STATUS_CANCELLED
        assert again.error == "cancelled: changed my mind"
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_CANCELLED
    message = await chat.stub.GetMessage(chat_pb2.GetMessageRequest(message_id=started.message_id))
    assert message.status == chat_pb2.MESSAGE_STATUS_FAILED
    assert dict(message.metadata)["error"] == "cancelled: changed my mind"
    assert dict(message.metadata)["execution_status"] == "cancelled"
    assert {c.status for c in message.flow[1].tools.calls} == {flow_pb2.TOOL_STATUS_CANCELLED}


class TraversalModel:
    """Tries to escape the sandbox and to break its limits, one call each."""

    name = "scripted"
    ATTEMPTS = (
        ("../escape.txt", "x"),
        ("/etc/appforge-escape", "x"),
        ("a/../../escape.txt", "x"),
        ("n" * 300, "x"),
        ("big.txt", "x" * 5000),
        ("ok.txt", "fine"),
    )

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn:
        if history:
            return Turn(text="Some files could not be written.")
        return Turn(
            tool_calls=tuple(
                ToolRequest(call_id=f"t{n}", name=WRITE_FILE, arguments={"path": p, "content": c})
                for n, (p, c) in enumerate(self.ATTEMPTS)
            )
        )


async def test_path_traversal_and_limits_fail_the_calls_and_touch_nothing_outside(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    async with running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp_path / "data",
        models={"scripted": TraversalModel()},
        sandbox_limits=SandboxLimits(max_file_bytes=1000),
    ) as handle:
        app = await new_app()
        events = await collect(handle.stub.Build(build(app.id)))
        assert handle.deployer.calls == []
    finished = events[-1].finished
    assert finished.status == builder_pb2.EXECUTION_STATUS_FAILED
    assert finished.error.startswith("tool call t0 (write_file) failed: path '../escape.txt'")
    [message] = await assistant_messages(chat, app.id)
    assert message.status == chat_pb2.MESSAGE_STATUS_FAILED
    calls = {c.call_id: c for c in message.flow[0].tools.calls}
    assert [calls[f"t{n}"].status for n in range(6)] == [flow_pb2.TOOL_STATUS_FAILED] * 5 + [
        flow_pb2.TOOL_STATUS_SUCCEEDED
    ]
    assert "1000-byte limit" in calls["t4"].error
    assert "256" in calls["t3"].error
    failed = metadata_value(message, "failed_calls")
    assert isinstance(failed, list)
    assert [c["call_id"] for c in failed] == ["t0", "t1", "t2", "t3", "t4"]
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert not (tmp_path / "escape.txt").exists() and not Path("/etc/appforge-escape").exists()
    assert not list(tmp_path.rglob("escape.txt"))
