"""The `appforge` command line as an operator meets it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import Infra, _admin
from tests.e2e.conftest import free_port


def _appforge(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appforge.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_serve_refuses_an_unmigrated_database_until_migrate(
    infra: Infra, service_env: dict[str, str]
) -> None:
    from sqlalchemy.engine import make_url

    name = f"appforge_cli_{uuid.uuid4().hex[:8]}"
    await _admin(infra, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(infra.admin_url).set(database=name).render_as_string(hide_password=False)
        env = {**service_env, "DATABASE_URL": url}
        refused = _appforge("serve", "chat", "--port", str(free_port()), env=env)
        assert refused.returncode == 2
        assert "run `appforge migrate`" in refused.stderr
        migrated = _appforge("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith("migrated ")
        again = _appforge("migrate", env=env)
        assert again.returncode == 0, again.stderr
    finally:
        await _admin(infra, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    ("env_extra", "needle"),
    [
        ({"DATABASE_URL": "mysql://root@127.0.0.1/x"}, "DATABASE_URL must use one of"),
        ({"APPFORGE_SHUTDOWN_GRACE": "soon"}, "APPFORGE_SHUTDOWN_GRACE must be a number"),
    ],
    ids=["bad-database-url", "bad-seconds"],
)
def test_bad_settings_are_explained_not_traced(
    env_extra: dict[str, str], needle: str, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "APPFORGE_DATA_DIR": str(tmp_path), **env_extra}
    result = _appforge("migrate", env=env)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "APPFORGE_DATA_DIR": str(tmp_path),
            "APPFORGE_METRICS_PORT": "0",
            "APPFORGE_INSECURE": "true",
        }
        result = _appforge("serve", "chat", "--port", str(port), env=env)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_a_key_refuses_unless_told_insecure(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "APPFORGE_DATA_DIR": str(tmp_path),
        "APPFORGE_METRICS_PORT": "0",
    }
    refused = _appforge("serve", "chat", "--port", str(free_port()), env=env)
    assert refused.returncode == 2
    for variable in ("APPFORGE_AUTH_JWT_SECRET", "APPFORGE_AUTH_JWT_PUBLIC_KEY_FILE", "--insecure"):
        assert variable in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "appforge.db").exists()  # refused before anything was made


def test_a_busy_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"PATH": "/usr/bin:/bin", "APPFORGE_DATA_DIR": str(tmp_path)}
        argv = ["serve", "chat", "--port", "0", "--metrics-port", str(port), "--insecure"]
        result = _appforge(*argv, env=env)
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_each_service_exports_prometheus_metrics(spawn) -> None:  # type: ignore[no-untyped-def]
    import aiohttp
    import grpc

    from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
    from tests.e2e.conftest import free_port

    metrics_port = free_port()
    chat = await spawn("chat", "--metrics-port", str(metrics_port))
    async with grpc.aio.insecure_channel(chat.address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        app = await stub.CreateApp(chat_pb2.CreateAppRequest(team_id="t", name="metrics-app"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetApp(chat_pb2.GetAppRequest(app_id="missing"))
        await stub.UpsertAssistantMessage(
            chat_pb2.UpsertAssistantMessageRequest(
                app_id=app.id, execution_id="e-metrics", status=chat_pb2.MESSAGE_STATUS_PROCESSING
            )
        )
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    create = 'appforge_rpcs_total{code="OK",method="/appforge.chat.v1.ChatService/CreateApp"} 1.0'
    missing = (
        'appforge_rpcs_total{code="NOT_FOUND",method="/appforge.chat.v1.ChatService/GetApp"} 1.0'
    )
    assert create in text and missing in text
    assert "appforge_chat_assistant_messages_created_total 1.0" in text
    assert "appforge_chat_assistant_upserts_total 1.0" in text


async def test_health_says_serving_or_why_not(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import functools

    chat = await spawn("chat")
    env = {"PATH": "/usr/bin:/bin", "APPFORGE_DATA_DIR": str(tmp_path)}
    health = functools.partial(_appforge, env=env)
    serving = await asyncio.to_thread(health, "health", chat.address)
    assert serving.returncode == 0 and "SERVING" in serving.stdout
    unknown = await asyncio.to_thread(health, "health", chat.address, "--service", "no.Service")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    down = await asyncio.to_thread(health, "health", f"127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    assert "Traceback" not in serving.stderr + unknown.stderr + down.stderr
