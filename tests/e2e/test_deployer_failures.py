"""Deployments that fail, hang, crash or outlive chat, through real processes.

The deployer runs as `appforge serve deployer` with its `s3` target pointed at loopback
endpoints: moto (S3 in server mode), a proxy that fails the first attempts, one that
denies everything, and an endpoint that accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.api.flow.v1 import flow_pb2
from tests.deploy_endpoints import FlakyS3Proxy, HangingEndpoint, MotoS3Server, marker_probe
from tests.e2e.conftest import ServiceProcess, free_port
from tests.helpers import text_item, upsert, watching

FILES = {"index.html": b"<!doctype html><p>calc</p>", "app.js": b"const add = (a, b) => a + b;"}
SUCCEEDED = deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED


def _ms(value: int) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMilliseconds(value)
    return out


def _policy(attempt_ms: int, attempts: int) -> deployer_pb2.DeploymentPolicy:
    return deployer_pb2.DeploymentPolicy(
        attempt_timeout=_ms(attempt_ms),
        max_attempts=attempts,
        initial_backoff=_ms(10),
        max_backoff=_ms(50),
    )


@pytest.fixture(scope="module")
def moto() -> Any:
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


class Stack:
    """Chat plus deployers, and an app with an execution whose message awaits the deploy."""

    def __init__(self, spawn: Any, tmp_path: Path, moto: MotoS3Server) -> None:
        self.spawn = spawn
        self.root = tmp_path / "deploys"
        self.moto = moto
        self.bucket = moto.create_bucket(f"b-{uuid.uuid4().hex[:12]}", public_read=True)
        self.chat: ServiceProcess | None = None
        self.channels: list[grpc.aio.Channel] = []

    async def start_chat(self, port: int | None = None) -> chat_pb2_grpc.ChatServiceAsyncStub:
        self.chat = await self.spawn("chat", port=port)
        return chat_pb2_grpc.ChatServiceStub(self._channel(self.chat.address))

    async def start_deployer(self, endpoint: str) -> tuple[ServiceProcess, Any]:
        assert self.chat is not None
        http_port = free_port()
        process = await self.spawn(
            "deployer",
            "--http-port",
            str(http_port),
            env={
                "APPFORGE_CHAT_ADDR": self.chat.address,
                "APPFORGE_DEPLOY_ROOT": str(self.root),
                "APPFORGE_DEPLOY_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
                "APPFORGE_DEPLOY_POLL_INTERVAL": "0.05",
                "APPFORGE_DEPLOY_LEASE": "1",
                "APPFORGE_S3_ENDPOINT_URL": endpoint,
                "APPFORGE_S3_BUCKET": self.bucket,
                "AWS_ACCESS_KEY_ID": self.moto.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.moto.secret_access_key,
            },
        )
        return process, deployer_pb2_grpc.DeployerServiceStub(self._channel(process.address))

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        self.channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)


@pytest_asyncio.fixture
async def stack(spawn: Any, tmp_path: Path, moto: MotoS3Server) -> AsyncIterator[Stack]:
    made = Stack(spawn, tmp_path, moto)
    yield made
    await made.close()


async def _app_and_execution(chat: Any) -> tuple[str, str]:
    app = await chat.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"a-{uuid.uuid4().hex[:8]}")
    )
    execution_id = str(uuid.uuid4())
    await chat.UpsertAssistantMessage(
        upsert(
            app.id, execution_id, text_item(1, "Built."), status=chat_pb2.MESSAGE_STATUS_COMPLETED
        )
    )
    return app.id, execution_id


def _deploy_request(
    app_id: str, execution_id: str, policy: deployer_pb2.DeploymentPolicy
) -> deployer_pb2.DeployRequest:
    return deployer_pb2.DeployRequest(
        app_id=app_id,
        app_version_id=str(uuid.uuid4()),
        execution_id=execution_id,
        files=[flow_pb2.File(path=p, content=c) for p, c in FILES.items()],
        target=deployer_pb2.DEPLOY_TARGET_S3,
        policy=policy,
    )


async def _watch_to_end(
    stub: Any, deployment_id: str, timeout: float = 60
) -> deployer_pb2.Deployment:
    last: deployer_pb2.Deployment | None = None
    async with asyncio.timeout(timeout):
        async for state in stub.WatchDeployment(
            deployer_pb2.WatchDeploymentRequest(deployment_id=deployment_id)
        ):
            last = state
    assert last is not None
    return last


def _has_status(value: str) -> Any:
    return lambda e: (
        "deployment_status" in e.message.metadata
        and e.message.metadata["deployment_status"] == value
    )


async def test_two_retryable_failures_then_deployed(stack: Stack) -> None:
    chat = await stack.start_chat()
    async with FlakyS3Proxy(stack.moto.endpoint_url, failures=2, match=marker_probe) as proxy:
        _, deployer = await stack.start_deployer(proxy.url)
        app_id, execution_id = await _app_and_execution(chat)
        async with watching(chat, app_id) as watcher:
            deployment = await deployer.Deploy(
                _deploy_request(app_id, execution_id, _policy(5000, 4))
            )
            final = await _watch_to_end(deployer, deployment.id)
            event = await watcher.until(_has_status("deployed"), timeout=30)
        assert final.status == SUCCEEDED
        assert [a.outcome for a in final.attempts] == [
            deployer_pb2.ATTEMPT_OUTCOME_FAILED_RETRYABLE,
            deployer_pb2.ATTEMPT_OUTCOME_FAILED_RETRYABLE,
            deployer_pb2.ATTEMPT_OUTCOME_SUCCEEDED,
        ]
        assert "503" in final.attempts[0].error
        assert event.message.metadata["url"] == final.url
        assert event.message.metadata["attempts"] == 3
        async with aiohttp.ClientSession() as http, http.get(final.url) as page:
            assert page.status == 200 and await page.read() == FILES["index.html"]


async def test_every_attempt_hangs_then_the_message_fails_with_timeout(stack: Stack) -> None:
    chat = await stack.start_chat()
    hanging = HangingEndpoint()
    await hanging.start()
    try:
        _, deployer = await stack.start_deployer(hanging.url)
        app_id, execution_id = await _app_and_execution(chat)
        async with watching(chat, app_id) as watcher:
            deployment = await deployer.Deploy(
                _deploy_request(app_id, execution_id, _policy(600, 3))
            )
            final = await _watch_to_end(deployer, deployment.id)
            event = await watcher.until(_has_status("timeout"), timeout=30)
        assert final.status == deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT
        assert [a.outcome for a in final.attempts] == [deployer_pb2.ATTEMPT_OUTCOME_TIMED_OUT] * 3
        # The hang is real: connections accepted and never answered. (The first attempt may
        # spend its deadline creating the S3 client before it connects.)
        assert hanging.accepted >= 1
        message = event.message
        assert message.execution_id == execution_id
        assert message.status == chat_pb2.MESSAGE_STATUS_FAILED
        assert message.metadata["error"] == "Deployment timeout"
        assert message.metadata["attempts"] == 3
    finally:
        await hanging.stop()


async def test_access_denied_fails_after_one_attempt(stack: Stack) -> None:
    chat = await stack.start_chat()
    async with FlakyS3Proxy(
        stack.moto.endpoint_url, status=403, code="AccessDenied", failures=None
    ) as proxy:
        _, deployer = await stack.start_deployer(proxy.url)
        app_id, execution_id = await _app_and_execution(chat)
        deployment = await deployer.Deploy(_deploy_request(app_id, execution_id, _policy(5000, 4)))
        final = await _watch_to_end(deployer, deployment.id)
        assert final.status == deployer_pb2.DEPLOYMENT_STATUS_FAILED
        assert [a.outcome for a in final.attempts] == [
            deployer_pb2.ATTEMPT_OUTCOME_FAILED_PERMANENT
        ]
        message = await _until_metadata(chat, app_id, execution_id, "failed")
        assert message.status == chat_pb2.MESSAGE_STATUS_FAILED
        assert message.metadata["error"] == "Deployment failed: s3 403 Forbidden"


async def test_a_killed_deployer_is_replaced_and_the_version_published_once(stack: Stack) -> None:
    chat = await stack.start_chat()
    hanging = HangingEndpoint()
    await hanging.start()
    try:
        doomed, doomed_stub = await stack.start_deployer(hanging.url)
        app_id, execution_id = await _app_and_execution(chat)
        request = _deploy_request(app_id, execution_id, _policy(30_000, 4))
        deployment = await doomed_stub.Deploy(request)
        await hanging.wait_accepted(1, timeout=20)  # mid-attempt: the first attempt is hanging
        doomed.process.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(doomed.process.wait, 10) == -signal.SIGKILL
        _, survivor = await stack.start_deployer(stack.moto.endpoint_url)
        final = await _watch_to_end(survivor, deployment.id)
    finally:
        await hanging.stop()
    assert final.status == SUCCEEDED
    assert [a.outcome for a in final.attempts] == [
        deployer_pb2.ATTEMPT_OUTCOME_LOST,
        deployer_pb2.ATTEMPT_OUTCOME_SUCCEEDED,
    ]
    assert final.attempts[0].worker_id != final.attempts[1].worker_id
    prefix = f"apps/{app_id}/versions/{request.app_version_id}/"
    assert stack.moto.keys(stack.bucket, prefix) == sorted(
        prefix + k for k in (*FILES, ".published")
    )
    message = await _until_metadata(chat, app_id, execution_id, "deployed")
    assert message.metadata["deployment_id"] == deployment.id


async def test_a_notice_waits_for_chat_to_come_back(stack: Stack) -> None:
    port = free_port()
    chat = await stack.start_chat(port)
    _, deployer = await stack.start_deployer(stack.moto.endpoint_url)
    app_id, execution_id = await _app_and_execution(chat)
    assert stack.chat is not None
    assert stack.chat.terminate() == 0  # chat is down when the deployment ends
    deployment = await deployer.Deploy(_deploy_request(app_id, execution_id, _policy(5000, 4)))
    final = await _watch_to_end(deployer, deployment.id)
    assert final.status == SUCCEEDED
    chat = await stack.start_chat(port)  # back, on the address the deployer knows
    message = await _until_metadata(chat, app_id, execution_id, "deployed")
    assert message.metadata["url"] == final.url


async def test_cancel_stops_a_running_attempt(stack: Stack) -> None:
    chat = await stack.start_chat()
    hanging = HangingEndpoint()
    await hanging.start()
    try:
        _, deployer = await stack.start_deployer(hanging.url)
        app_id, execution_id = await _app_and_execution(chat)
        deployment = await deployer.Deploy(
            _deploy_request(app_id, execution_id, _policy(60_000, 4))
        )
        await hanging.wait_accepted(1, timeout=20)
        await deployer.CancelDeployment(
            deployer_pb2.CancelDeploymentRequest(deployment_id=deployment.id, reason="user")
        )
        final = await _watch_to_end(deployer, deployment.id, timeout=20)
    finally:
        await hanging.stop()
    assert final.status == deployer_pb2.DEPLOYMENT_STATUS_CANCELLED
    assert [a.outcome for a in final.attempts] == [deployer_pb2.ATTEMPT_OUTCOME_CANCELLED]
    message = await _until_metadata(chat, app_id, execution_id, "cancelled")
    assert message.status == chat_pb2.MESSAGE_STATUS_FAILED


async def _until_metadata(
    chat: Any, app_id: str, execution_id: str, status: str, timeout: float = 30
) -> chat_pb2.ChatMessage:
    """The execution's message once its metadata says `status`, from a WatchApp stream."""
    async with watching(chat, app_id) as watcher:  # replays the current state first
        event = await watcher.until(
            lambda e: e.message.execution_id == execution_id and _has_status(status)(e), timeout
        )
    return event.message
