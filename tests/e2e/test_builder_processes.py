"""The builder as its own OS process, with chat and the deployer, on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import grpc

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.flow.v1 import flow_pb2
from tests.app_checks import IN_CI, parse_html, run_node
from tests.e2e.conftest import ServiceProcess, appforge, free_port
from tests.helpers import watching
from tests.openai_endpoint import (
    INDEX_ARGS,
    PLAN,
    STYLES_ARGS,
    FakeEndpoint,
    Silence,
    Stream,
    call_chunks,
    finish,
    serving,
    text_chunks,
)

Spawn = Callable[..., "asyncio.Task[ServiceProcess]"]


async def _build(address: str, app_id: str, prompt: str) -> list[builder_pb2.BuildEvent]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = builder_pb2_grpc.BuilderServiceStub(channel)
        events = []
        async with asyncio.timeout(60):
            async for event in stub.Build(builder_pb2.BuildRequest(app_id=app_id, prompt=prompt)):
                events.append(event)
        return events


def _deployed(event: chat_pb2.MessageEvent) -> bool:
    return event.message.metadata.fields.get("deployment_status", None) is not None and (
        event.message.metadata["deployment_status"] == "deployed"
    )


def _check_js(source: bytes, tmp_path: Path) -> None:
    script = tmp_path / "app.js"
    script.write_bytes(source)
    node = shutil.which("node")
    if node is None:
        assert not IN_CI, "CI=true and `node` is not on PATH"
        return
    subprocess.run([node, "--check", str(script)], check=True, timeout=30)
    results = run_node(
        "const { evaluate } = require(process.argv[1]);"
        "console.log(JSON.stringify(['1+2*3', '(4-1)/2'].map((e) => evaluate(e).display)));",
        str(script),
    )
    assert results == ["7", "1.5"]


async def test_build_a_calculator_through_three_processes(spawn: Spawn, tmp_path: Path) -> None:
    chat = await spawn("chat")
    http_port = free_port()
    deployer = await spawn(
        "deployer",
        "--http-port",
        str(http_port),
        env={
            "APPFORGE_CHAT_ADDR": chat.address,
            "APPFORGE_DEPLOY_ROOT": str(tmp_path / "deploys"),
            "APPFORGE_DEPLOY_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
            "APPFORGE_DEPLOY_POLL_INTERVAL": "0.05",
        },
    )
    builder = await spawn(
        "builder",
        env={"APPFORGE_CHAT_ADDR": chat.address, "APPFORGE_DEPLOYER_ADDR": deployer.address},
    )
    async with grpc.aio.insecure_channel(chat.address) as chat_channel:
        chat_stub = chat_pb2_grpc.ChatServiceStub(chat_channel)
        app = await chat_stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="t", name=f"calc-{uuid.uuid4().hex[:8]}")
        )
        async with watching(chat_stub, app.id) as watcher:
            events = await _build(builder.address, app.id, "build a calculator")
            finished = events[-1].finished
            assert finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED, finished.error
            deployed = await watcher.until(_deployed, timeout=30)
        message = deployed.message
        execution_id = events[0].started.execution_id
        page = await chat_stub.ListMessages(chat_pb2.ListMessagesRequest(app_id=app.id))
        assistants = [m for m in page.messages if m.role == chat_pb2.ROLE_ASSISTANT]
        assert [m.execution_id for m in assistants] == [execution_id]  # one message
        assert message.id == events[0].started.message_id
        assert message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
        assert message.metadata["deployment_id"] == finished.deployment_id

    flow = list(message.flow)
    assert [item.seq for item in flow] == list(range(1, len(flow) + 1))
    stamps = [item.timestamp.ToMicroseconds() for item in flow]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    tools_then_text = [
        (a, b) for a, b in itertools.pairwise(flow) if a.HasField("tools") and b.HasField("message")
    ]
    assert tools_then_text, [item.WhichOneof("body") for item in flow]
    for tools, text in tools_then_text:
        assert tools.seq < text.seq and stamps[tools.seq - 1] < stamps[text.seq - 1]
    calls = [c for item in flow if item.HasField("tools") for c in item.tools.calls]
    assert calls and {c.status for c in calls} == {flow_pb2.TOOL_STATUS_SUCCEEDED}

    async with grpc.aio.insecure_channel(builder.address) as channel:
        version = await builder_pb2_grpc.BuilderServiceStub(channel).GetAppVersion(
            builder_pb2.GetAppVersionRequest(app_version_id=finished.app_version_id)
        )
    files = {f.path: f.content for f in version.files}
    parsed = parse_html(files["index.html"].decode())
    assert [attrs.get("src") for attrs in parsed.tags("script")] == ["app.js"]
    _check_js(files["app.js"], tmp_path)

    url = str(message.metadata["url"])
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert await response.read() == files["index.html"]


def _plan_then_silence() -> list[Stream | Silence]:
    """The first turn writes two files; the second request is never answered."""
    return [
        Stream(
            chunks=[
                *text_chunks(PLAN),
                *call_chunks(0, "call_a", "write_file", INDEX_ARGS),
                *call_chunks(1, "call_b", "write_file", STYLES_ARGS),
                finish("tool_calls"),
            ]
        ),
        Silence(),
    ]


async def test_a_killed_builders_execution_is_failed_by_a_surviving_one(spawn: Spawn) -> None:
    chat = await spawn("chat")
    liveness = {"APPFORGE_EXECUTION_LEASE": "1", "APPFORGE_SWEEP_INTERVAL": "0.2"}
    async with serving(FakeEndpoint(replies=list(_plan_then_silence()))) as endpoint:
        doomed = await spawn(
            "builder",
            env={
                **liveness,
                "APPFORGE_CHAT_ADDR": chat.address,
                "APPFORGE_MODEL": "openai",
                "OPENAI_BASE_URL": endpoint.base_url,
                "OPENAI_API_KEY": "sk-test",
                "APPFORGE_OPENAI_MODEL": "gpt-test",
            },
        )
        survivor = await spawn("builder", env={**liveness, "APPFORGE_CHAT_ADDR": chat.address})
        async with grpc.aio.insecure_channel(chat.address) as chat_channel:
            chat_stub = chat_pb2_grpc.ChatServiceStub(chat_channel)
            app = await chat_stub.CreateApp(
                chat_pb2.CreateAppRequest(team_id="t", name=f"kill-{uuid.uuid4().hex[:8]}")
            )
            async with (
                watching(chat_stub, app.id) as watcher,
                grpc.aio.insecure_channel(doomed.address) as channel,
            ):
                stream = builder_pb2_grpc.BuilderServiceStub(channel).Build(
                    builder_pb2.BuildRequest(app_id=app.id, prompt="build a calculator")
                )
                first = await stream.read()
                assert isinstance(first, builder_pb2.BuildEvent), first
                started = first.started
                await asyncio.wait_for(endpoint.silent.wait(), 30)  # mid-execution
                doomed.process.kill()  # SIGKILL: no shutdown path runs
                doomed.process.wait(10)
                event = await watcher.until(
                    lambda e: (
                        e.message.execution_id == started.execution_id
                        and e.message.status == chat_pb2.MESSAGE_STATUS_FAILED
                    ),
                    timeout=20,
                )
    message = event.message
    error = message.metadata["error"]
    assert isinstance(error, str) and "no heartbeat for 1 s" in error
    calls = [c for item in message.flow if item.HasField("tools") for c in item.tools.calls]
    assert [c.status for c in calls] == [flow_pb2.TOOL_STATUS_SUCCEEDED] * 2
    assert all(not item.HasField("tools") or item.seq == 2 for item in message.flow)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        execution = await builder_pb2_grpc.BuilderServiceStub(channel).GetExecution(
            builder_pb2.GetExecutionRequest(execution_id=started.execution_id)
        )
    assert execution.status == builder_pb2.EXECUTION_STATUS_FAILED
    assert execution.app_version_id == "" and execution.deployment_id == ""
    assert json.loads(calls[0].arguments_json)["path"] == "index.html"
    # `appforge inspect` shows it ended, and finds nothing wrong: one message, nothing open.
    inspected = await appforge("inspect", started.execution_id, "--chat", chat.address, "--json")
    assert inspected.code == 0, inspected.stdout + inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["problems"] == []
    [shown] = report["messages"]
    assert (
        shown["status"] == "MESSAGE_STATUS_FAILED" and "no heartbeat" in shown["metadata"]["error"]
    )
