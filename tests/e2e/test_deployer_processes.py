"""The deployer as its own OS process, with chat, on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.api.flow.v1 import flow_pb2
from appforge.services.common import db
from tests.deploy_endpoints import HangingEndpoint
from tests.e2e.conftest import ServiceProcess, Spawn, free_port
from tests.helpers import text_item, upsert, watching

CALCULATOR = {
    "index.html": b"<!doctype html><html><body><script src='app.js'></script></body></html>",
    "app.js": b"function add(a, b) { return a + b; }",
}


def _ms(value: int) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMilliseconds(value)
    return out


def _request(app_id: str, execution_id: str, **policy: Any) -> deployer_pb2.DeployRequest:
    return deployer_pb2.DeployRequest(
        app_id=app_id,
        app_version_id=str(uuid.uuid4()),
        execution_id=execution_id,
        files=[flow_pb2.File(path=p, content=c) for p, c in CALCULATOR.items()],
        target=deployer_pb2.DEPLOY_TARGET_LOCAL,
        policy=deployer_pb2.DeploymentPolicy(**policy),
    )


@pytest.fixture
def deployer_env(tmp_path: Path) -> Callable[[ServiceProcess], tuple[list[str], dict[str, str]]]:
    root = tmp_path / "deploys"

    def make(chat: ServiceProcess) -> tuple[list[str], dict[str, str]]:
        http_port = free_port()
        return ["--http-port", str(http_port)], {
            "APPFORGE_CHAT_ADDR": chat.address,
            "APPFORGE_DEPLOY_ROOT": str(root),
            "APPFORGE_DEPLOY_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
            "APPFORGE_DEPLOY_POLL_INTERVAL": "0.05",
            "APPFORGE_DEPLOY_LEASE": "1",
        }

    return make


async def _final(
    stub: deployer_pb2_grpc.DeployerServiceAsyncStub, deployment_id: str
) -> list[deployer_pb2.Deployment]:
    states = []
    async with asyncio.timeout(30):
        async for state in stub.WatchDeployment(
            deployer_pb2.WatchDeploymentRequest(deployment_id=deployment_id)
        ):
            states.append(state)
    return states


async def test_deploy_publishes_serves_and_marks_the_message_deployed(spawn, deployer_env) -> None:  # type: ignore[no-untyped-def]
    chat = await spawn("chat")
    args, env = deployer_env(chat)
    deployer = await spawn("deployer", *args, env=env)
    async with (
        grpc.aio.insecure_channel(chat.address) as chat_channel,
        grpc.aio.insecure_channel(deployer.address) as channel,
    ):
        chat_stub = chat_pb2_grpc.ChatServiceStub(chat_channel)
        stub = deployer_pb2_grpc.DeployerServiceStub(channel)
        app = await chat_stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="t", name=f"calc-{uuid.uuid4().hex[:8]}")
        )
        execution_id = str(uuid.uuid4())
        await chat_stub.UpsertAssistantMessage(
            upsert(
                app.id,
                execution_id,
                text_item(1, "Built."),
                status=chat_pb2.MESSAGE_STATUS_COMPLETED,
            )
        )
        async with watching(chat_stub, app.id) as watcher:
            request = _request(app.id, execution_id)
            deployment = await stub.Deploy(request)
            again = await stub.Deploy(request)
            assert again.id == deployment.id
            states = await _final(stub, deployment.id)
            final = states[-1]
            assert final.status == deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
            assert [a.outcome for a in final.attempts] == [deployer_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
            assert final.url == f"{env['APPFORGE_DEPLOY_PUBLIC_URL']}/apps/{app.id}/"
            event = await watcher.until(
                lambda e: (
                    e.message.metadata["deployment_status"] == "deployed"
                    if "deployment_status" in e.message.metadata
                    else False
                ),
                timeout=20,
            )
        message = event.message
        assert message.execution_id == execution_id
        assert message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
        assert message.metadata["url"] == final.url
        assert message.metadata["deployment_id"] == deployment.id
        async with aiohttp.ClientSession() as http:
            async with http.get(final.url) as page:
                assert page.status == 200
                assert await page.read() == CALCULATOR["index.html"]
            async with http.get(final.url + "app.js") as script:
                assert script.status == 200 and await script.read() == CALCULATOR["app.js"]


async def test_a_deploy_for_an_execution_chat_never_saw_ends_its_message(  # type: ignore[no-untyped-def]
    spawn, deployer_env
) -> None:
    chat = await spawn("chat")
    args, env = deployer_env(chat)
    deployer = await spawn("deployer", *args, env=env)
    async with (
        grpc.aio.insecure_channel(chat.address) as chat_channel,
        grpc.aio.insecure_channel(deployer.address) as channel,
    ):
        chat_stub = chat_pb2_grpc.ChatServiceStub(chat_channel)
        stub = deployer_pb2_grpc.DeployerServiceStub(channel)
        app = await chat_stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="t", name=f"direct-{uuid.uuid4().hex[:8]}")
        )
        execution_id = str(uuid.uuid4())  # no builder wrote anything for it
        async with watching(chat_stub, app.id) as watcher:
            deployment = await stub.Deploy(_request(app.id, execution_id))
            assert (await _final(stub, deployment.id))[-1].status == (
                deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
            )
            event = await watcher.until(
                lambda e: (
                    e.message.execution_id == execution_id
                    and e.message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
                ),
                timeout=20,
            )
    assert event.message.metadata["deployment_status"] == "deployed"


async def _stored(pg_url: str) -> tuple[int, int]:
    engine = db.create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            deployments = await conn.scalar(sa.text("SELECT count(*) FROM deploy_deployments"))
            files = await conn.scalar(sa.text("SELECT count(*) FROM deploy_files"))
    finally:
        await engine.dispose()
    return int(deployments or 0), int(files or 0)


async def test_bad_deploy_requests_name_the_field(spawn, deployer_env, pg_url) -> None:  # type: ignore[no-untyped-def]
    chat = await spawn("chat")
    args, env = deployer_env(chat)
    deployer = await spawn("deployer", *args, env=env)
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(files=[]), "files"),
        (dict(files=[flow_pb2.File(path="../x", content=b"x")]), "files[0].path"),
        (dict(files=[flow_pb2.File(path="/etc/passwd", content=b"x")]), "files[0].path"),
        (dict(app_id=""), "app_id"),
        (dict(target=deployer_pb2.DEPLOY_TARGET_S3), "target"),
        (
            dict(policy=deployer_pb2.DeploymentPolicy(attempt_timeout=_ms(-5))),
            "policy.attempt_timeout",
        ),
        (dict(target=9), "target"),
    ]
    before = await _stored(pg_url)
    async with grpc.aio.insecure_channel(deployer.address) as channel:
        stub = deployer_pb2_grpc.DeployerServiceStub(channel)
        for change, field in cases:
            request = _request("app", "exec")
            for key, value in change.items():
                if key == "files":
                    del request.files[:]
                    request.files.extend(value)
                elif key == "policy":
                    request.policy.CopyFrom(value)
                else:
                    setattr(request, key, value)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Deploy(request)
            assert err.value.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
            ), field
            assert (err.value.details() or "").startswith(f"{field}: "), err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetDeployment(
                deployer_pb2.GetDeploymentRequest(deployment_id=str(uuid.uuid4()))
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert await _stored(pg_url) == before  # nothing half-written


@pytest.mark.parametrize("taker_workers", ["all busy", "none"])
async def test_a_deploy_taken_by_a_replica_with_no_free_worker_starts_on_another(
    spawn: Spawn,
    deployer_env: Callable[[ServiceProcess], tuple[list[str], dict[str, str]]],
    taker_workers: str,
) -> None:
    """Replica A takes the Deploys and has no free worker: its one worker is busy (its
    publish to S3 hangs on an endpoint that never answers), or it runs none
    (APPFORGE_DEPLOY_WORKERS=0). B's workers would poll only every 60 s. Each deployment
    starts on B within a bound far below the poll: B was woken through the bus. How soon
    is measured, not asserted (`bench/deployer.py --mode wake` reports its p99)."""
    chat = await spawn("chat")
    args_a, env_a = deployer_env(chat)
    args_b, env_b = deployer_env(chat)
    slow_poll = {"APPFORGE_DEPLOY_POLL_INTERVAL": "60", "APPFORGE_LOG_LEVEL": "INFO"}
    busy = taker_workers == "all busy"
    async with HangingEndpoint() as s3:
        s3_env = {
            "APPFORGE_S3_ENDPOINT_URL": s3.url,
            "APPFORGE_S3_BUCKET": "never-answers",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
        }
        taker = await spawn(
            "deployer",
            *args_a,
            env={**env_a, **slow_poll, **s3_env, "APPFORGE_DEPLOY_WORKERS": "1" if busy else "0"},
        )
        pickups_ms = []
        async with (
            grpc.aio.insecure_channel(chat.address) as chat_channel,
            grpc.aio.insecure_channel(taker.address) as channel,
        ):
            app = await chat_pb2_grpc.ChatServiceStub(chat_channel).CreateApp(
                chat_pb2.CreateAppRequest(team_id="t", name=f"wake-{uuid.uuid4().hex[:8]}")
            )
            stub = deployer_pb2_grpc.DeployerServiceStub(channel)
            if busy:
                stuck = _request(app.id, str(uuid.uuid4()), attempt_timeout=_ms(120_000))
                stuck.target = deployer_pb2.DEPLOY_TARGET_S3
                await stub.Deploy(stuck)
                await s3.wait_accepted(timeout=10)  # A's only worker is in its publish for good
            # B starts only now, so A's worker, not B's, is the one that took the stuck one.
            worker = await spawn("deployer", *args_b, env={**env_b, **slow_poll})
            for _ in range(10):
                deployment = await stub.Deploy(_request(app.id, str(uuid.uuid4())))
                async with asyncio.timeout(10):  # the poll would take up to 60 s
                    final = (await _final(stub, deployment.id))[-1]
                assert final.status == deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
                [attempt] = final.attempts
                assert attempt.worker_id.rsplit(":", 2)[1] == str(worker.process.pid), attempt
                started = attempt.started_at.ToMicroseconds() - final.created_at.ToMicroseconds()
                pickups_ms.append(started / 1000)
    pickups_ms.sort()
    print(
        f"Deploy on A ({taker_workers}) -> attempt started on B: "
        f"p50 {pickups_ms[4]:.1f} ms, max {pickups_ms[-1]:.1f} ms"
    )
    assert taker.process.poll() is None and worker.process.poll() is None
