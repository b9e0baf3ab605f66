"""Successful builds over gRPC against the real chat service, on both backends: what a Build
streams and stores, its stamps' order, tools that finish out of order, a client that goes
away, and the model a build runs (the default, OpenAI over loopback HTTP)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.builder.models.openai import OpenAIConfig, OpenAIModel
from appforge.services.builder.models.scripted import ScriptedModel
from appforge.services.builder.models.templates import CALCULATOR
from appforge.services.common.clock import FrozenClock
from tests.helpers import watching
from tests.integration.builder_fixtures import (
    BuilderHandle,
    OneBatchModel,
    collect,
    next_event,
    read_started,
    running_builder,
    start_gated,
)
from tests.integration.builder_service_helpers import (
    NOW,
    assert_ordered,
    assistant_messages,
    build,
    stamps,
)
from tests.integration.conftest import ChatHandle, NewApp
from tests.openai_endpoint import FakeEndpoint, calculator_replies, serving


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

    # The Build stream carried every item (text in pieces, each at its offset), and the last
    # state of each call.
    streamed: dict[int, flow_pb2.FlowItem] = {}
    for event in events[1:-1]:
        item = event.item
        if item.HasField("message"):
            so_far = streamed[item.seq].message.text if item.seq in streamed else ""
            assert item.message.offset == len(so_far), item
            item = flow_pb2.FlowItem(
                seq=item.seq, message=flow_pb2.TextPart(text=so_far + item.message.text)
            )
        elif item.HasField("tools") and item.seq in streamed:
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
    assert [streamed[i.seq].message.text for i in message.flow if i.HasField("message")] == [
        i.message.text for i in message.flow if i.HasField("message")
    ]
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
