"""Golden flows: `appforge build` against chat, builder and deployer as separate processes
on PostgreSQL and Redis (and once against `appforge up` with no servers at all), each
checked afterwards with `appforge inspect`."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
import sqlalchemy as sa

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common import db
from tests.app_checks import parse_html, run_node
from tests.deploy_endpoints import FlakyS3Proxy, HangingEndpoint, MotoS3Server, marker_probe
from tests.e2e.conftest import Cli, ServiceProcess, Spawn, appforge, free_port, wait_serving
from tests.helpers import watching


@dataclass(kw_only=True)
class Stack:
    """The three services, and the flags `appforge build` needs to find them."""

    chat: ServiceProcess
    builder: ServiceProcess
    deployer: ServiceProcess

    def flags(self) -> list[str]:
        return [
            "--chat",
            self.chat.address,
            "--builder",
            self.builder.address,
            "--deployer",
            self.deployer.address,
        ]

    async def build(self, prompt: str, *extra: str) -> Cli:
        return await appforge(
            "build",
            prompt,
            "--app",
            f"golden-{uuid.uuid4().hex[:8]}",
            *self.flags(),
            "--json",
            *extra,
        )


@pytest.fixture(scope="module")
def moto() -> Any:
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


class StackFactory:
    def __init__(self, spawn: Spawn, tmp_path: Path) -> None:
        self.spawn = spawn
        self.tmp_path = tmp_path

    async def chat(self) -> ServiceProcess:
        process: ServiceProcess = await self.spawn("chat")
        return process

    def deployer_env(self, chat: ServiceProcess, http_port: int, **extra: str) -> dict[str, str]:
        return {
            "APPFORGE_CHAT_ADDR": chat.address,
            "APPFORGE_DEPLOY_ROOT": str(self.tmp_path / "deploys"),
            "APPFORGE_DEPLOY_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
            "APPFORGE_DEPLOY_POLL_INTERVAL": "0.05",
            "APPFORGE_DEPLOY_LEASE": "1",
            **extra,
        }

    async def deployer(
        self, chat: ServiceProcess, *, port: int | None = None, **extra: str
    ) -> ServiceProcess:
        http_port = free_port()
        process: ServiceProcess = await self.spawn(
            "deployer",
            "--http-port",
            str(http_port),
            env=self.deployer_env(chat, http_port, **extra),
            port=port,
        )
        return process

    async def stack(self, **deployer_env: str) -> Stack:
        chat = await self.chat()
        deployer = await self.deployer(chat, port=None, **deployer_env)
        builder: ServiceProcess = await self.spawn(
            "builder",
            env={"APPFORGE_CHAT_ADDR": chat.address, "APPFORGE_DEPLOYER_ADDR": deployer.address},
        )
        return Stack(chat=chat, builder=builder, deployer=deployer)


@pytest.fixture
def stacks(spawn: Spawn, tmp_path: Path) -> StackFactory:
    return StackFactory(spawn, tmp_path)


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


async def message_of(chat: ServiceProcess, execution_id: str) -> chat_pb2.ChatMessage:
    async with grpc.aio.insecure_channel(chat.address) as channel:
        return await chat_pb2_grpc.ChatServiceStub(channel).GetMessageByExecution(
            chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
        )


async def inspect(chat: ServiceProcess, target: str) -> tuple[int, dict[str, Any]]:
    result = await appforge("inspect", target, "--chat", chat.address, "--json")
    assert result.code in (0, 1), result.stderr
    return result.code, json.loads(result.stdout)


def assert_one_ordered_message(report: dict[str, Any], execution_id: str) -> dict[str, Any]:
    [message] = [m for m in report["messages"] if m.get("execution_id") == execution_id]
    flow = message["flow"]
    assert [int(item["seq"]) for item in flow] == list(range(1, len(flow) + 1))
    stamps = [item["timestamp_us"] for item in flow]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    return dict(message)


async def test_golden_flow_builds_deploys_and_serves_a_working_calculator(
    stacks: StackFactory, pg_url: str, tmp_path: Path
) -> None:
    stack = await stacks.stack()
    result = await stack.build("build a calculator")
    assert result.code == 0, result.stderr + result.stdout
    outcome = result.event("result")
    assert outcome["status"] == "deployed"
    execution_id = result.event("started")["executionId"]
    app_id = result.event("app")["id"]

    message = await message_of(stack.chat, execution_id)
    assert message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
    assert message.metadata["deployment_status"] == "deployed"
    assert message.metadata["url"] == outcome["url"]
    code, report = await inspect(stack.chat, app_id)
    assert code == 0 and report["problems"] == []
    assistant = [m for m in report["messages"] if m["role"] == "ROLE_ASSISTANT"]
    assert len(assistant) == 1
    assert_one_ordered_message(report, execution_id)

    async with aiohttp.ClientSession() as http:
        async with http.get(outcome["url"]) as page:
            assert page.status == 200
            html = await page.text()
        async with http.get(outcome["url"] + "app.js") as script:
            assert script.status == 200
            (tmp_path / "app.js").write_bytes(await script.read())
    parsed = parse_html(html)
    assert "calculator" in "".join(parsed.text_by_tag.get("title", [])).lower()
    computed = run_node(
        "const { evaluate } = require(process.argv[1]);"
        "const shown = ['12+3*4', '(1+2)*3', '1/0'].map((e) => evaluate(e).display);"
        "console.log(JSON.stringify(shown));",
        str(tmp_path / "app.js"),
    )
    assert computed == ["24", "9", "Error"]

    # A split execution, planted the way the old system made them: a second assistant
    # message for the same execution, tied to it only by its metadata.
    await plant_split(pg_url, app_id, execution_id)
    code, report = await inspect(stack.chat, app_id)
    assert code == 1
    [problem] = report["problems"]
    assert problem["kind"] == "split_execution" and problem["execution_id"] == execution_id
    flagged = await appforge("inspect", execution_id, "--chat", stack.chat.address)
    assert flagged.code == 1 and "split_execution" in flagged.stdout


async def plant_split(pg_url: str, app_id: str, execution_id: str) -> None:
    engine = db.create_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO chat_messages (id, app_id, role, execution_id, content, status,"
                    " metadata, version, cursor, created_us, updated_us) VALUES (:id, :app, 2,"
                    " NULL, 'Tool completed', 3, CAST(:metadata AS JSON), 1, 0, :now, :now)"
                ),
                {
                    "id": str(uuid.uuid4()),
                    "app": app_id,
                    "metadata": json.dumps({"execution_id": execution_id}),
                    "now": 1_900_000_000_000_000,
                },
            )
    finally:
        await engine.dispose()


async def test_timeout_flow_fails_the_build_and_the_message_visibly(
    stacks: StackFactory, moto: MotoS3Server
) -> None:
    bucket = moto.create_bucket(f"b-{uuid.uuid4().hex[:12]}", public_read=True)
    async with HangingEndpoint() as hanging:
        stack = await stacks.stack(
            **s3_env(
                moto,
                hanging.url,
                bucket,
                APPFORGE_DEPLOY_ATTEMPT_TIMEOUT="0.3",
                APPFORGE_DEPLOY_MAX_ATTEMPTS="2",
            )
        )
        app_name = f"slow-{uuid.uuid4().hex[:8]}"
        async with grpc.aio.insecure_channel(stack.chat.address) as channel:
            chat = chat_pb2_grpc.ChatServiceStub(channel)
            app = await chat.CreateApp(chat_pb2.CreateAppRequest(team_id="default", name=app_name))
            async with watching(chat, app.id) as watcher:  # started before the build
                result = await appforge(
                    "build", "build a calculator", "--app", app_name, *stack.flags(), "--json"
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
    code, report = await inspect(stack.chat, message.execution_id)
    assert code == 0, report["problems"]
    assert assert_one_ordered_message(report, message.execution_id)["status"] == (
        "MESSAGE_STATUS_FAILED"
    )


async def test_retry_flow_deploys_on_the_third_attempt(
    stacks: StackFactory, moto: MotoS3Server
) -> None:
    bucket = moto.create_bucket(f"b-{uuid.uuid4().hex[:12]}", public_read=True)
    async with FlakyS3Proxy(moto.endpoint_url, failures=2, match=marker_probe) as proxy:
        stack = await stacks.stack(**s3_env(moto, proxy.url, bucket))
        result = await stack.build("build a calculator")
    assert result.code == 0, result.stderr
    final = [e for e in result.events() if e["event"] == "deployment"][-1]
    assert [a["outcome"] for a in final["attempts"]] == [
        "ATTEMPT_OUTCOME_FAILED_RETRYABLE",
        "ATTEMPT_OUTCOME_FAILED_RETRYABLE",
        "ATTEMPT_OUTCOME_SUCCEEDED",
    ]
    execution_id = result.event("started")["executionId"]
    message = await message_of(stack.chat, execution_id)
    assert message.metadata["deployment_status"] == "deployed"
    assert message.metadata["attempts"] == 3
    assert (await inspect(stack.chat, execution_id))[0] == 0


async def test_a_deployer_killed_mid_attempt_and_restarted_deploys_once(
    stacks: StackFactory, moto: MotoS3Server
) -> None:
    bucket = moto.create_bucket(f"b-{uuid.uuid4().hex[:12]}", public_read=True)
    hanging = HangingEndpoint()
    await hanging.start()
    try:
        stack = await stacks.stack(
            **s3_env(moto, hanging.url, bucket, APPFORGE_DEPLOY_ATTEMPT_TIMEOUT="30")
        )
        port = int(stack.deployer.address.rsplit(":", 1)[1])
        build = asyncio.ensure_future(stack.build("build a calculator", "--timeout", "120"))
        await hanging.wait_accepted(1, timeout=30)  # the first attempt hangs
        stack.deployer.process.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(stack.deployer.process.wait, 10) == -signal.SIGKILL
        # The same address, now with a working S3: the CLI watches again and sees it end.
        await stacks.deployer(stack.chat, port=port, **s3_env(moto, moto.endpoint_url, bucket))
        result = await asyncio.wait_for(build, 120)
    finally:
        await hanging.stop()
    assert result.code == 0, result.stderr
    final = [e for e in result.events() if e["event"] == "deployment"][-1]
    assert [a["outcome"] for a in final["attempts"]] == [
        "ATTEMPT_OUTCOME_LOST",
        "ATTEMPT_OUTCOME_SUCCEEDED",
    ]
    version = result.event("finished")["appVersionId"]
    app_id = result.event("app")["id"]
    prefix = f"apps/{app_id}/versions/{version}/"
    assert sorted(moto.keys(bucket, prefix)) == sorted(
        prefix + k for k in ("index.html", "styles.css", "app.js", ".published")
    )
    execution_id = result.event("started")["executionId"]
    assert (await message_of(stack.chat, execution_id)).metadata["deployment_status"] == "deployed"
    assert (await inspect(stack.chat, execution_id))[0] == 0


@pytest_asyncio.fixture
async def up_process(
    tmp_path: Path,
) -> AsyncIterator[tuple[dict[str, int], subprocess.Popen[bytes]]]:
    ports = {name: free_port() for name in ("chat", "builder", "deployer", "http", "metrics")}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APPFORGE_", "DATABASE_URL", "REDIS_URL"))
    }
    env["APPFORGE_DATA_DIR"] = str(tmp_path / "data")
    env["APPFORGE_METRICS_PORT"] = str(ports["metrics"])
    log = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appforge.cli",
            "up",
            "--chat-port",
            str(ports["chat"]),
            "--builder-port",
            str(ports["builder"]),
            "--deployer-port",
            str(ports["deployer"]),
            "--http-port",
            str(ports["http"]),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for name in ("chat", "builder", "deployer"):
            await wait_serving(f"127.0.0.1:{ports[name]}", process)
        yield ports, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


async def test_golden_flow_on_appforge_up_with_no_servers(
    up_process: tuple[dict[str, int], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    ports, process = up_process
    clean = {"DATABASE_URL": "", "REDIS_URL": ""}
    result = await appforge(
        "build",
        "build a calculator",
        "--chat",
        f"127.0.0.1:{ports['chat']}",
        "--builder",
        f"127.0.0.1:{ports['builder']}",
        "--deployer",
        f"127.0.0.1:{ports['deployer']}",
        env=clean,
    )
    assert result.code == 0, result.stderr + result.stdout
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith(f"http://127.0.0.1:{ports['http']}/apps/")
    assert "✔ deployed" in result.stdout
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as page:
            assert page.status == 200 and "calculator" in (await page.text()).lower()
        async with http.get(f"http://127.0.0.1:{ports['metrics']}/metrics") as scraped:
            metrics = await scraped.text()
    for line in (
        "appforge_builder_duplicate_messages_total 0.0",
        'appforge_builder_tool_calls_total{status="succeeded",tool="write_file"} 3.0',
        'appforge_builder_executions_total{status="succeeded"} 1.0',
        'appforge_deployer_attempts_total{outcome="succeeded"} 1.0',
        'appforge_deployer_deployments_total{status="succeeded"} 1.0',
        "appforge_chat_assistant_messages_created_total 1.0",
    ):
        assert line in metrics, line
    app_id = url.rstrip("/").rsplit("/", 1)[1]
    inspected = await appforge("inspect", app_id, "--chat", f"127.0.0.1:{ports['chat']}")
    assert inspected.code == 0, inspected.stdout
    assert "no problems" in inspected.stdout
    process.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop
    assert await asyncio.to_thread(process.wait, 20) == 0
    assert (tmp_path / "data" / "appforge.db").exists()
