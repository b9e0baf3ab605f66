"""Shutting down mid-build: executions end as FAILED with the reason, never hanging.

`appforge up` stops the builder first, so a running execution's message is FAILED ("the
builder shut down during the execution") while chat still answers, and the `appforge
build` following it exits 1 with that reason. A final notice chat could not take at
shutdown (chat was down) waits in the builder's outbox and is delivered on its next start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest_asyncio

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common import auth
from appforge.services.common.tls import open_channel
from tests.e2e.conftest import ServiceProcess, appforge, free_port, wait_serving
from tests.helpers import watching
from tests.openai_endpoint import FakeEndpoint, Silence, serving

Spawn = Callable[..., "asyncio.Task[ServiceProcess]"]

REASON = "the builder shut down during the execution"


def _openai_env(endpoint: FakeEndpoint) -> dict[str, str]:
    return {
        "APPFORGE_MODEL": "openai",
        "OPENAI_BASE_URL": endpoint.base_url,
        "OPENAI_API_KEY": "sk-test",
        "APPFORGE_OPENAI_MODEL": "gpt-test",
    }


def _failed_with_reason(execution_id: str) -> Callable[[chat_pb2.MessageEvent], bool]:
    def matches(event: chat_pb2.MessageEvent) -> bool:
        message = event.message
        return (
            message.execution_id == execution_id
            and message.status == chat_pb2.MESSAGE_STATUS_FAILED
            and REASON in str(message.metadata["error"])
        )

    return matches


def _assistant_created(event: chat_pb2.MessageEvent) -> bool:
    return event.message.role == chat_pb2.ROLE_ASSISTANT and bool(event.message.execution_id)


async def _exited(process: subprocess.Popen[bytes], timeout: float) -> int:
    """The exit status of `process`, which must exit within `timeout` seconds."""
    return await asyncio.to_thread(process.wait, timeout)


@dataclass(kw_only=True)
class Up:
    """One `appforge up` process."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log_path: Path
    data_dir: Path

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def channel(self, name: str) -> grpc.aio.Channel:
        """A channel whose calls carry an admin token signed with the secret `up` made."""
        secret = auth.local_secret(self.data_dir)
        assert secret is not None, "up made no signing secret in its data directory"
        minter = auth.AuthSettings(secret=secret).minter("tests")
        assert minter is not None
        token = minter.token(teams=[], role=auth.Role.ADMIN, ttl=300)
        return open_channel(self.address(name), None, credentials=auth.metadata_of(token))

    def cli_env(self) -> dict[str, str]:
        """The CLI on the embedded default, finding `up`'s secret where `up` keeps it."""
        return {"DATABASE_URL": "", "REDIS_URL": "", "APPFORGE_DATA_DIR": str(self.data_dir)}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest_asyncio.fixture
async def silent_model() -> AsyncIterator[FakeEndpoint]:
    """An OpenAI-compatible endpoint that accepts the first request and never answers."""
    async with serving(FakeEndpoint(replies=[Silence()])) as endpoint:
        yield endpoint


@pytest_asyncio.fixture
async def up(tmp_path: Path, silent_model: FakeEndpoint) -> AsyncIterator[Up]:
    """`appforge up` on free ports and the embedded defaults, its model never answering."""
    ports = {name: free_port() for name in ("chat", "builder", "deployer", "http")}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APPFORGE_", "DATABASE_URL", "REDIS_URL", "OPENAI_"))
    }
    env.update(
        APPFORGE_DATA_DIR=str(tmp_path / "data"),
        APPFORGE_METRICS_PORT="0",
        APPFORGE_SHUTDOWN_GRACE="3",
        **_openai_env(silent_model),
    )
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appforge.cli",
                "up",
                *("--chat-port", str(ports["chat"]), "--builder-port", str(ports["builder"])),
                *("--deployer-port", str(ports["deployer"]), "--http-port", str(ports["http"])),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    handle = Up(process=process, ports=ports, log_path=log_path, data_dir=tmp_path / "data")
    try:
        for name in ("chat", "builder", "deployer"):
            await wait_serving(handle.address(name), process)
        yield handle
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


async def test_ctrl_c_of_up_fails_the_running_build_with_the_reason_before_exiting(
    up: Up, silent_model: FakeEndpoint
) -> None:
    name = f"shutdown-{uuid.uuid4().hex[:8]}"
    async with up.channel("chat") as channel:
        chat = chat_pb2_grpc.ChatServiceStub(channel)
        app = await chat.CreateApp(
            chat_pb2.CreateAppRequest(team_id="default", name=name, return_existing=True)
        )
        async with watching(chat, app.id) as watcher:
            build = asyncio.ensure_future(
                appforge(
                    "build",
                    "build a calculator",
                    *("--app", name, "--json", "--chat", up.address("chat")),
                    *("--builder", up.address("builder"), "--deployer", up.address("deployer")),
                    env=up.cli_env(),
                    timeout=60,
                )
            )
            created = await watcher.until(_assistant_created, timeout=30)
            execution_id = created.message.execution_id
            await asyncio.wait_for(silent_model.silent.wait(), 30)  # the model is thinking
            assert created.message.status == chat_pb2.MESSAGE_STATUS_PROCESSING

            up.process.send_signal(signal.SIGINT)
            failed = await watcher.until(_failed_with_reason(execution_id), timeout=15)
            # Chat is part of `up`: the watcher saw the end from a chat that still served.
            assert up.process.poll() is None, "up exited before the message was marked FAILED"
            result = await build
    assert await _exited(up.process, timeout=20) == 0, up.log()

    assert failed.message.id == created.message.id
    assert result.code == 1, result.stdout + result.stderr
    finished = result.event("finished")
    assert finished["status"] == "EXECUTION_STATUS_FAILED"
    assert REASON in finished["error"]
    outcome = result.event("result")
    assert outcome["status"] == "build_failed" and REASON in outcome["error"]
    assert "Cancelling all calls" not in result.stderr
    log = up.log()
    assert "final_notice_deferred" not in log and "Connection refused" not in log, log


async def test_a_notice_chat_could_not_take_at_shutdown_is_delivered_on_the_next_start(
    spawn: Spawn, silent_model: FakeEndpoint
) -> None:
    chat_port = free_port()
    chat = await spawn("chat", port=chat_port)
    builder_env = {
        "APPFORGE_CHAT_ADDR": chat.address,
        "APPFORGE_SWEEP_INTERVAL": "0.2",
        # Room for the final notice's retries against the dead chat within the drain.
        "APPFORGE_SHUTDOWN_GRACE": "8",
    }
    builder = await spawn("builder", env={**builder_env, **_openai_env(silent_model)})
    async with grpc.aio.insecure_channel(chat.address) as channel:
        app = await chat_pb2_grpc.ChatServiceStub(channel).CreateApp(
            chat_pb2.CreateAppRequest(team_id="t", name=f"outbox-{uuid.uuid4().hex[:8]}")
        )
    async with grpc.aio.insecure_channel(builder.address) as channel:
        stream = builder_pb2_grpc.BuilderServiceStub(channel).Build(
            builder_pb2.BuildRequest(app_id=app.id, prompt="build a calculator")
        )
        first = await asyncio.wait_for(stream.read(), 30)
        assert isinstance(first, builder_pb2.BuildEvent), first
        started = first.started
        await asyncio.wait_for(silent_model.silent.wait(), 30)
        chat.process.kill()  # chat is down when the builder ends the execution
        await _exited(chat.process, timeout=10)
        builder.process.send_signal(signal.SIGTERM)
        events = [event async for event in _rest(stream, timeout=20)]
    # Even with chat down the Build stream ends with `finished`, not a transport error.
    assert events and events[-1].WhichOneof("event") == "finished", events
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_FAILED
    assert REASON in events[-1].finished.error
    assert await _exited(builder.process, timeout=20) == 0, builder.log()
    assert "final_notice_deferred" in builder.log()

    chat = await spawn("chat", port=chat_port)
    async with grpc.aio.insecure_channel(chat.address) as channel:
        chat_stub = chat_pb2_grpc.ChatServiceStub(channel)
        before = await chat_stub.GetMessage(
            chat_pb2.GetMessageRequest(message_id=started.message_id)
        )
        assert before.status == chat_pb2.MESSAGE_STATUS_PROCESSING  # the notice is undelivered
        async with watching(chat_stub, app.id) as watcher:
            await spawn("builder", env=builder_env)
            delivered = await watcher.until(_failed_with_reason(started.execution_id), timeout=20)
    assert delivered.message.id == started.message_id


async def _rest(
    stream: grpc.aio.UnaryStreamCall[builder_pb2.BuildRequest, builder_pb2.BuildEvent],
    *,
    timeout: float,
) -> AsyncIterator[builder_pb2.BuildEvent]:
    """The stream's remaining events, all within `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            event = await stream.read()
            if not isinstance(event, builder_pb2.BuildEvent):  # grpc.aio.EOF: it ended
                return
            yield event
