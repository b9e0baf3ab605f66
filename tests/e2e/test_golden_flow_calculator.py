"""Golden flows that deploy: `appforge build` builds, deploys and serves a working calculator,
against the three services as separate processes on PostgreSQL and Redis and once against
`appforge up` with no servers at all, each checked afterwards with `appforge inspect`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
import sqlalchemy as sa

from appforge.api.chat.v1 import chat_pb2
from appforge.services.common import db
from tests.app_checks import parse_html, run_node
from tests.e2e.conftest import appforge, free_port, wait_serving
from tests.e2e.golden_stack import StackFactory, assert_one_ordered_message


async def test_golden_flow_builds_deploys_and_serves_a_working_calculator(
    secure_stacks: StackFactory, pg_url: str, tmp_path: Path
) -> None:
    stack = await secure_stacks.stack()
    result = await stack.build("build a calculator")
    assert result.code == 0, result.stderr + result.stdout
    outcome = result.event("result")
    assert outcome["status"] == "deployed"
    execution_id = result.event("started")["execution_id"]
    app_id = result.event("app")["id"]

    message = await stack.message_of(execution_id)
    assert message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
    assert message.metadata["deployment_status"] == "deployed"
    assert message.metadata["url"] == outcome["url"]
    code, report = await stack.inspect(app_id)
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
    code, report = await stack.inspect(app_id)
    assert code == 1
    [problem] = report["problems"]
    assert problem["kind"] == "split_execution" and problem["execution_id"] == execution_id
    flagged = await appforge(
        "inspect", execution_id, "--chat", stack.chat.address, env=stack.client_env()
    )
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
    # The CLI finds the secret `up` made in the data directory, and mints its own token.
    clean = {"DATABASE_URL": "", "REDIS_URL": "", "APPFORGE_DATA_DIR": str(tmp_path / "data")}
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
    inspected = await appforge("inspect", app_id, "--chat", f"127.0.0.1:{ports['chat']}", env=clean)
    assert inspected.code == 0, inspected.stdout
    assert "no problems" in inspected.stdout
    process.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop
    assert await asyncio.to_thread(process.wait, 20) == 0
    assert (tmp_path / "data" / "appforge.db").exists()
