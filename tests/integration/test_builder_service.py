"""The builder over gRPC against the real chat service, on both backends."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.builder.models.base import WRITE_FILE, Exchange, ToolRequest, Turn
from appforge.services.builder.models.openai import OpenAIConfig, OpenAIModel
from appforge.services.builder.models.scripted import ScriptedModel
from appforge.services.builder.models.templates import CALCULATOR
from appforge.services.builder.sandbox import SandboxLimits
from appforge.services.common.clock import FrozenClock
from tests.helpers import table_counts, watching
from tests.integration.builder_fixtures import (
    BuilderHandle,
    OneBatchModel,
    collect,
    metadata_text,
    metadata_value,
    next_event,
    read_started,
    running_builder,
    start_gated,
)
from tests.integration.conftest import ChatHandle, NewApp
from tests.openai_endpoint import FakeEndpoint, calculator_replies, serving

NOW = 1_800_000_000_000_000


@pytest.fixture
async def builder(
    backend: tuple[str, str, str | None], chat: ChatHandle, tmp_path: Path
) -> AsyncIterator[BuilderHandle]:
    async with running_builder(
        database_url=backend[1], chat_address=chat.address, tmp=tmp_path
    ) as handle:
        yield handle


def build(app_id: str, prompt: str = "build a calculator", **kw: str) -> builder_pb2.BuildRequest:
    return builder_pb2.BuildRequest(app_id=app_id, prompt=prompt, **kw)


def stamps(message: chat_pb2.ChatMessage) -> list[int]:
    return [item.timestamp.ToMicroseconds() for item in message.flow]


def assert_ordered(message: chat_pb2.ChatMessage) -> None:
    """seq 1..N and strictly increasing stamps (invariant 2)."""
    assert [item.seq for item in message.flow] == list(range(1, len(message.flow) + 1))
    times = stamps(message)
    assert all(a < b for a, b in itertools.pairwise(times)), times


async def assistant_messages(chat: ChatHandle, app_id: str) -> list[chat_pb2.ChatMessage]:
    page = await chat.stub.ListMessages(chat_pb2.ListMessagesRequest(app_id=app_id))
    return [m for m in page.messages if m.role == chat_pb2.ROLE_ASSISTANT]


async def test_build_a_calculator_streams_ordered_items_onto_one_message(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    events = await collect(builder.stub.Build(build(app.id)))
    started, finished = events[0].started, events[-1].finished
    assert started.execution_id and started.message_id and started.user_message_id
    assert finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED, finished.error
    assert finished.app_version_id and finished.deployment_id == "deployment-1"

    [message] = await assistant_messages(chat, app.id)
    assert message.id == started.message_id
    assert message.execution_id == started.execution_id
    assert message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
    assert_ordered(message)
    kinds = [item.WhichOneof("body") for item in message.flow]
    assert kinds == ["message", "tools", "message", "tools", "message"]
    # A tools item and the text right after it: their own seq and stamp, in that order.
    tools, text = message.flow[1], message.flow[2]
    assert tools.seq + 1 == text.seq
    assert tools.timestamp.ToMicroseconds() < text.timestamp.ToMicroseconds()
    calls = [c for item in message.flow if item.HasField("tools") for c in item.tools.calls]
    assert len(calls) == 4
    assert {c.status for c in calls} == {flow_pb2.TOOL_STATUS_SUCCEEDED}
    assert all(c.HasField("deadline") and c.result_json for c in calls)
    metadata = dict(message.metadata)
    assert metadata["app_version_id"] == finished.app_version_id
    assert metadata["deployment_id"] == "deployment-1"
    assert metadata["execution_status"] == "succeeded"
    assert "calculator" in message.content.lower()

    # The Build stream carried every item, and the last state of each call.
    streamed: dict[int, flow_pb2.FlowItem] = {}
    for event in events[1:-1]:
        item = event.item
        if item.HasField("tools") and item.seq in streamed:
            merged = {c.call_id: c for c in streamed[item.seq].tools.calls}
            merged.update({c.call_id: c for c in item.tools.calls})
            item = flow_pb2.FlowItem(
                execution_id=item.execution_id,
                seq=item.seq,
                timestamp=item.timestamp,
                tools=flow_pb2.ToolBatch(calls=list(merged.values())),
            )
        streamed[item.seq] = item
    assert sorted(streamed) == [item.seq for item in message.flow]
    assert {c.call_id: c.status for item in streamed.values() for c in item.tools.calls} == {
        c.call_id: c.status for c in calls
    }

    # The version holds a calculator, and Deploy was called once, with exactly those files.
    version = await builder.stub.GetAppVersion(
        builder_pb2.GetAppVersionRequest(app_version_id=finished.app_version_id)
    )
    files = {f.path: f.content for f in version.files}
    assert sorted(files) == ["app.js", "index.html", "styles.css"]
    assert b"<html" in files["index.html"].lower() and b"app.js" in files["index.html"]
    [deploy] = builder.deployer.calls
    assert deploy["app_version_id"] == finished.app_version_id
    assert deploy["execution_id"] == started.execution_id
    assert deploy["files"] == files

    execution = await builder.stub.GetExecution(
        builder_pb2.GetExecutionRequest(execution_id=started.execution_id)
    )
    assert execution.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED
    assert execution.message_id == message.id and execution.last_seq == len(message.flow)
    assert execution.prompt == "build a calculator" and execution.model == "scripted"
    assert len(execution.tool_calls) == 4 and execution.HasField("finished_at")
    # The sandbox is gone once the version holds the files.
    assert not (builder.sandboxes / started.execution_id).exists()


async def test_a_frozen_wall_clock_still_gives_strictly_increasing_stamps(
    backend: tuple[str, str, str | None],
    chat: ChatHandle,
    new_app: NewApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FrozenClock(NOW)
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, result: object = None) -> object:
        slept.append(delay)
        return await real_sleep(delay, result)

    async with running_builder(
        database_url=backend[1], chat_address=chat.address, tmp=tmp_path, clock=clock
    ) as handle:
        app = await new_app()
        monkeypatch.setattr(asyncio, "sleep", recording_sleep)
        events = await collect(handle.stub.Build(build(app.id)))
        monkeypatch.undo()
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED
    [message] = await assistant_messages(chat, app.id)
    assert_ordered(message)
    assert stamps(message) == list(range(NOW, NOW + len(message.flow)))
    assert [d for d in slept if d > 0] == []  # nothing waited to order anything


async def test_tools_finishing_out_of_order_all_land_on_the_one_message(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    files = {f"page{n}.html": f"<p>{n}</p>" for n in range(8)}
    async with running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp_path,
        models={"scripted": OneBatchModel(files)},
        gate=len(files),
    ) as handle:
        app = await new_app()
        stream, _, workspace = await start_gated(handle, app.id)
        order = sorted(files)
        random.Random(7).shuffle(order)
        assert order != sorted(order)
        events: list[builder_pb2.BuildEvent] = []
        for path in order:  # one at a time: each ends before the next may
            workspace.release([path])
            async with asyncio.timeout(10):
                while not any(_succeeded(e, path) for e in events):
                    event = await next_event(stream)
                    assert event is not None
                    events.append(event)
        events += await collect(stream)
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED
    [message] = await assistant_messages(chat, app.id)
    calls = [c for item in message.flow if item.HasField("tools") for c in item.tools.calls]
    assert sorted(json.loads(c.arguments_json)["path"] for c in calls) == sorted(files)
    assert {c.status for c in calls} == {flow_pb2.TOOL_STATUS_SUCCEEDED}
    assert [c.call_id for c in calls] == [f"w{n}" for n in range(len(files))]  # batch order
    ended = [p for e in events for p in files if _succeeded(e, p)]
    assert list(dict.fromkeys(ended)) == order  # first ends, in release order
    assert_ordered(message)


def _succeeded(event: builder_pb2.BuildEvent, path: str) -> bool:
    return event.HasField("item") and any(
        c.status == flow_pb2.TOOL_STATUS_SUCCEEDED and json.loads(c.result_json)["path"] == path
        for c in event.item.tools.calls
    )


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

    async def next_turn(self, prompt: str, history: Sequence[Exchange]) -> Turn:
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


async def test_a_client_that_disconnects_does_not_stop_the_execution(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    async with watching(chat.stub, app.id) as watcher:
        stream = builder.stub.Build(build(app.id))
        started = await read_started(stream)
        stream.cancel()
        event = await watcher.until(
            lambda e: (
                e.message.execution_id == started.execution_id
                and e.message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
                and "deployment_id" in dict(e.message.metadata)
            )
        )
    assert_ordered(event.message)
    assert len(builder.deployer.calls) == 1


async def test_build_from_an_existing_user_message_and_only_once(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    user = await chat.stub.PostUserMessage(
        chat_pb2.PostUserMessageRequest(app_id=app.id, content="a todo list please")
    )
    request = builder_pb2.BuildRequest(app_id=app.id, user_message_id=user.id)
    events = await collect(builder.stub.Build(request))
    assert events[0].started.user_message_id == user.id
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED
    version = await builder.stub.GetAppVersion(
        builder_pb2.GetAppVersionRequest(app_version_id=events[-1].finished.app_version_id)
    )
    assert b"todo" in {f.path: f.content for f in version.files}["index.html"].lower()
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await collect(builder.stub.Build(request))
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert events[0].started.execution_id in (again.value.details() or "")


async def test_a_request_id_makes_a_retried_build_start_nothing_new(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    first = await collect(builder.stub.Build(build(app.id, request_id="req-1")))
    with pytest.raises(grpc.aio.AioRpcError) as retried:
        await collect(builder.stub.Build(build(app.id, request_id="req-1")))
    assert retried.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first[0].started.execution_id in (retried.value.details() or "")
    assert len(await assistant_messages(chat, app.id)) == 1


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"app_id": "", "prompt": "hi"}, grpc.StatusCode.INVALID_ARGUMENT, "app_id"),
        ({"prompt": ""}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ({"prompt": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ({"prompt": "x" * 70_000}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ({"prompt": "hi", "model": "gpt-9"}, grpc.StatusCode.INVALID_ARGUMENT, "model"),
        ({"prompt": "hi", "model": "openai"}, grpc.StatusCode.FAILED_PRECONDITION, "model"),
        ({"app_id": "no-such-app", "prompt": "hi"}, grpc.StatusCode.NOT_FOUND, ""),
        ({"user_message_id": "no-such-message"}, grpc.StatusCode.NOT_FOUND, ""),
    ],
)
async def test_bad_build_requests_get_a_clear_status_and_start_nothing(
    builder: BuilderHandle,
    chat: ChatHandle,
    new_app: NewApp,
    request_fields: dict[str, str],
    code: grpc.StatusCode,
    field: str,
) -> None:
    app = await new_app()
    fields = {"app_id": app.id, **request_fields}
    before = await table_counts(builder.runtime.engine)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(builder.stub.Build(builder_pb2.BuildRequest(**fields)))
    assert caught.value.code() == code, caught.value.details()
    assert (caught.value.details() or "").startswith(field)
    assert await table_counts(builder.runtime.engine) == before
    assert await assistant_messages(chat, app.id) == []


async def test_a_user_message_of_another_app_is_refused(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    mine, other = await new_app(), await new_app()
    user = await chat.stub.PostUserMessage(
        chat_pb2.PostUserMessageRequest(app_id=other.id, content="a counter")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(
            builder.stub.Build(builder_pb2.BuildRequest(app_id=mine.id, user_message_id=user.id))
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (caught.value.details() or "").startswith("user_message_id")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("GetExecution", grpc.StatusCode.NOT_FOUND),
        ("CancelExecution", grpc.StatusCode.NOT_FOUND),
        ("GetAppVersion", grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_unknown_ids_are_not_found(
    builder: BuilderHandle, call: str, code: grpc.StatusCode
) -> None:
    requests = {
        "GetExecution": builder_pb2.GetExecutionRequest(execution_id="nope"),
        "CancelExecution": builder_pb2.CancelExecutionRequest(execution_id="nope"),
        "GetAppVersion": builder_pb2.GetAppVersionRequest(app_version_id="nope"),
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(builder.stub, call)(requests[call])
    assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await getattr(builder.stub, call)(type(requests[call])())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancelling_a_succeeded_execution_is_a_failed_precondition(
    builder: BuilderHandle, new_app: NewApp
) -> None:
    app = await new_app()
    events = await collect(builder.stub.Build(build(app.id, "a counter")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await builder.stub.CancelExecution(
            builder_pb2.CancelExecutionRequest(execution_id=events[0].started.execution_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


class OpenAIStandIn(OneBatchModel):
    name = "openai"


async def test_a_build_naming_no_model_gets_the_builders_default(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    async with running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp_path,
        models={"scripted": ScriptedModel(), "openai": OpenAIStandIn({"a.html": "<p>a</p>"})},
        model="openai",
    ) as handle:
        app = await new_app()
        events = await collect(handle.stub.Build(build(app.id)))
        execution = await handle.stub.GetExecution(
            builder_pb2.GetExecutionRequest(execution_id=events[0].started.execution_id)
        )
    assert execution.model == "openai"
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED


async def test_the_openai_provider_builds_the_calculator_over_loopback_http(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    async with serving(FakeEndpoint(replies=calculator_replies())) as endpoint:
        model = OpenAIModel(
            OpenAIConfig(base_url=endpoint.base_url, api_key="sk-loop", model="gpt-test")
        )
        try:
            async with running_builder(
                database_url=backend[1],
                chat_address=chat.address,
                tmp=tmp_path,
                models={"scripted": ScriptedModel(), "openai": model},
            ) as handle:
                app = await new_app()
                events = await collect(handle.stub.Build(build(app.id, model="openai")))
                finished = events[-1].finished
                assert finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED, finished.error
                version = await handle.stub.GetAppVersion(
                    builder_pb2.GetAppVersionRequest(app_version_id=finished.app_version_id)
                )
        finally:
            await model.close()
    assert {f.path: f.content.decode() for f in version.files} == {
        "index.html": CALCULATOR.index_html,
        "styles.css": CALCULATOR.styles_css,
        "app.js": CALCULATOR.app_js,
    }
    assert len(endpoint.requests) == 3
    assert endpoint.requests[0].headers["Authorization"] == "Bearer sk-loop"
    # The model saw each tool's result before its next turn.
    tool_messages = [m for m in endpoint.requests[2].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_a", "call_b", "call_c", "call_d"]
    [message] = await assistant_messages(chat, app.id)
    assert dict(message.metadata)["model"] == "openai"
    assert_ordered(message)
    assert message.status == chat_pb2.MESSAGE_STATUS_COMPLETED


class HeartbeatDuringTheEnd:
    """A chat client that lets the builder heartbeat while the final notice is on its way:
    the execution's row no longer says RUNNING, but its runner is still finishing it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.service: Any = None
        self.beats = 0

    async def post_user_message(self, **kw: Any) -> Any:
        return await self.inner.post_user_message(**kw)

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
