"""Golden flows through deploy failures on S3 (moto behind a hanging endpoint or a flaky
proxy): a timeout that fails the build and its message visibly, retries that deploy on the
third attempt, and a deployer killed mid-attempt that deploys once after its restart."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import pytest

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from tests.deploy_endpoints import FlakyS3Proxy, HangingEndpoint, MotoS3Server, marker_probe
from tests.e2e.conftest import appforge
from tests.e2e.golden_stack import StackFactory, assert_one_ordered_message
from tests.helpers import watching


@pytest.fixture(scope="module")
def moto() -> Any:
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


def s3_env(moto: MotoS3Server, endpoint: str, bucket: str, **policy: str) -> dict[str, str]:
    return {
        "APPFORGE_DEPLOY_TARGET": "s3",
        "APPFORGE_S3_ENDPOINT_URL": endpoint,
        "APPFORGE_S3_BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
        "APPFORGE_DEPLOY_INITIAL_BACKOFF": "0.01",
        "APPFORGE_DEPLOY_MAX_BACKOFF": "0.05",
        **policy,
    }


async def test_timeout_flow_fails_the_build_and_the_message_visibly(
    secure_stacks: StackFactory, moto: MotoS3Server
) -> None:
    bucket = moto.create_bucket(f"b-{uuid.uuid4().hex[:12]}", public_read=True)
    async with HangingEndpoint() as hanging:
        stack = await secure_stacks.stack(
            **s3_env(
                moto,
                hanging.url,
                bucket,
                APPFORGE_DEPLOY_ATTEMPT_TIMEOUT="0.3",
                APPFORGE_DEPLOY_MAX_ATTEMPTS="2",
            )
        )
        app_name = f"slow-{uuid.uuid4().hex[:8]}"
        async with stack.channel(stack.chat.address) as channel:
            chat = chat_pb2_grpc.ChatServiceStub(channel)
            app = await chat.CreateApp(chat_pb2.CreateAppRequest(team_id="default", name=app_name))
            async with watching(chat, app.id) as watcher:  # started before the build
                result = await appforge(
                    "build",
                    "build a calculator",
                    "--app",
                    app_name,
                    *stack.flags(),
                    "--json",
                    env=stack.client_env(),
                )
                event = await watcher.until(
                    lambda e: e.message.status == chat_pb2.MESSAGE_STATUS_FAILED, timeout=30
                )
    assert result.code == 1, result.stderr
    assert result.event("result")["status"] == "deploy_failed"
    assert result.event("result")["error"].startswith("timed_out")
    message = event.message
    assert message.metadata["error"] == "Deployment timeout"
    assert message.metadata["deployment_status"] == "timeout"
    code, report = await stack.inspect(message.execution_id)
    assert code == 0, report["problems"]
    assert assert_one_ordered_message(report, message.execution_id)["status"] == (
        "MESSAGE_STATUS_FAILED"
    )


async def test_retry_flow_deploys_on_the_third_attempt(
    secure_stacks: StackFactory, moto: MotoS3Server
) -> None:
    bucket = moto.create_bucket(f"b-{uuid.uuid4().hex[:12]}", public_read=True)
    async with FlakyS3Proxy(moto.endpoint_url, failures=2, match=marker_probe) as proxy:
        stack = await secure_stacks.stack(**s3_env(moto, proxy.url, bucket))
        result = await stack.build("build a calculator")
    assert result.code == 0, result.stderr
    final = [e for e in result.events() if e["event"] == "deployment"][-1]
    assert [a["outcome"] for a in final["attempts"]] == [
        "ATTEMPT_OUTCOME_FAILED_RETRYABLE",
        "ATTEMPT_OUTCOME_FAILED_RETRYABLE",
        "ATTEMPT_OUTCOME_SUCCEEDED",
    ]
    execution_id = result.event("started")["execution_id"]
    message = await stack.message_of(execution_id)
    assert message.metadata["deployment_status"] == "deployed"
    assert message.metadata["attempts"] == 3
    assert (await stack.inspect(execution_id))[0] == 0


async def test_a_deployer_killed_mid_attempt_and_restarted_deploys_once(
    secure_stacks: StackFactory, moto: MotoS3Server
) -> None:
    bucket = moto.create_bucket(f"b-{uuid.uuid4().hex[:12]}", public_read=True)
    hanging = HangingEndpoint()
    await hanging.start()
    try:
        stack = await secure_stacks.stack(
            **s3_env(moto, hanging.url, bucket, APPFORGE_DEPLOY_ATTEMPT_TIMEOUT="30")
        )
        port = int(stack.deployer.address.rsplit(":", 1)[1])
        build = asyncio.ensure_future(stack.build("build a calculator", "--timeout", "120"))
        await hanging.wait_accepted(1, timeout=30)  # the first attempt hangs
        stack.deployer.process.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(stack.deployer.process.wait, 10) == -signal.SIGKILL
        # The same address, now with a working S3: the CLI watches again and sees it end.
        await secure_stacks.deployer(
            stack.chat, port=port, **s3_env(moto, moto.endpoint_url, bucket)
        )
        result = await asyncio.wait_for(build, 120)
    finally:
        await hanging.stop()
    assert result.code == 0, result.stderr
    final = [e for e in result.events() if e["event"] == "deployment"][-1]
    assert [a["outcome"] for a in final["attempts"]] == [
        "ATTEMPT_OUTCOME_LOST",
        "ATTEMPT_OUTCOME_SUCCEEDED",
    ]
    version = result.event("finished")["app_version_id"]
    app_id = result.event("app")["id"]
    prefix = f"apps/{app_id}/versions/{version}/"
    assert sorted(moto.keys(bucket, prefix)) == sorted(
        prefix + k for k in ("index.html", "styles.css", "app.js", ".published")
    )
    execution_id = result.event("started")["execution_id"]
    assert (await stack.message_of(execution_id)).metadata["deployment_status"] == "deployed"
    assert (await stack.inspect(execution_id))[0] == 0
