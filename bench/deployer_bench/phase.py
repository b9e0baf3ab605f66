"""One configuration: a fresh database and deploy root, chat, `processes` deployers sharing
both (on the noop target in `noop` mode), the app, the load, the wait for every deployment
and notice, then the checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from pathlib import Path

import asyncpg
import grpc
from harness import (
    CALL_TIMEOUT_S,
    CHANNEL_OPTIONS,
    MIGRATE_TIMEOUT_S,
    BenchError,
    Child,
    PySpy,
    appforge_command,
    bench_database,
    free_port,
    log,
    run_command,
    running,
)

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc

from .artifact import Artifact
from .checks import build_checks, check_root
from .config import BenchConfig
from .cpu import cpu_sample
from .load import enqueue
from .results import PhaseResult, summarise_phase
from .tables import deployment_rows, wait_ended, wait_notices


async def create_app(chat_address: str, token: str) -> str:
    """One app, made through chat's `CreateApp`; its id."""
    async with grpc.aio.insecure_channel(chat_address, options=CHANNEL_OPTIONS) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        app = await stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="bench", name=f"deploy-bench-{token}"),
            timeout=CALL_TIMEOUT_S,
        )
        return str(app.id)


def deployer_child(
    name: str, ports: tuple[int, int], env: dict[str, str], workdir: Path
) -> tuple[Child, str]:
    """A deployer process on (gRPC port, HTTP port), and its gRPC address."""
    port, http_port = ports
    child = Child(
        name,
        [
            *appforge_command(),
            *("serve", "deployer", "--host", "127.0.0.1"),
            *("--port", str(port), "--http-port", str(http_port)),
        ],
        env,
        workdir / f"{name}.log",
    )
    return child, f"127.0.0.1:{port}"


async def deployer_stub(
    stack: contextlib.AsyncExitStack, address: str
) -> deployer_pb2_grpc.DeployerServiceAsyncStub:
    """A Deploy client of the deployer at `address`, its channel closed with `stack`."""
    channel = await stack.enter_async_context(
        grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    )
    return deployer_pb2_grpc.DeployerServiceStub(channel)


async def start_chat(
    stack: contextlib.AsyncExitStack,
    config: BenchConfig,
    dsn: str,
    root: Path,
    workdir: Path,
    tag: str,
) -> tuple[dict[str, str], Child, str]:
    """On the fresh database `dsn`: the schema, a running chat and one app made through it.
    Answers the deployers' environment (chat's address in it), chat and the app's id."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_URL": config.redis_url,
        "APPFORGE_DEPLOY_ROOT": str(root),
        "APPFORGE_DEPLOY_POLL_INTERVAL": str(config.poll_interval),
        "APPFORGE_DEPLOY_WORKERS": str(config.workers),
        "APPFORGE_LOG_LEVEL": "WARNING",
    }
    if config.mode != "local":
        env["APPFORGE_DEPLOY_TARGET"] = "noop"
    await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
    chat_port = free_port()
    chat = Child(
        f"chat-{tag}",
        [*appforge_command(), "serve", "chat", "--host", "127.0.0.1", "--port", str(chat_port)],
        env,
        workdir / f"chat-{tag}.log",
    )
    await stack.enter_async_context(running(chat, f"127.0.0.1:{chat_port}"))
    app_id = await create_app(f"127.0.0.1:{chat_port}", secrets.token_hex(3))
    return {**env, "APPFORGE_CHAT_ADDR": f"127.0.0.1:{chat_port}"}, chat, app_id


async def run_phase(
    processes: int, config: BenchConfig, artifact: Artifact, workdir: Path
) -> PhaseResult:
    """One configuration: fresh database and root, chat, `processes` deployers, the load."""
    tag = f"{processes}p"
    root = workdir / f"root-{tag}"
    root.mkdir()
    async with bench_database(config.admin_dsn) as dsn, contextlib.AsyncExitStack() as stack:
        env, chat, app_id = await start_chat(stack, config, dsn, root, workdir, tag)
        ports = [(free_port(), free_port()) for _ in range(processes)]
        # Every deployer serves the shared root; the URL names the first one's.
        env = {**env, "APPFORGE_DEPLOY_PUBLIC_URL": f"http://127.0.0.1:{ports[0][1]}"}
        children = [
            deployer_child(f"deployer-{tag}-{n}", ports[n], env, workdir) for n in range(processes)
        ]
        for child, address in children:
            await stack.enter_async_context(running(child, address))
        pids = [child.pid for child, _ in children]
        log(f"{tag}: chat pid {chat.pid}, deployer pids {pids}, app {app_id}")

        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)
        stubs = [await deployer_stub(stack, address) for _, address in children]

        spy = None
        if config.py_spy is not None and processes == 1 and pids[0] is not None:
            spy = PySpy(config.py_spy, pids[0])
            await spy.start()
        before = cpu_sample(pids, chat.pid)
        started = time.perf_counter()
        try:
            sent = await enqueue(
                stubs,
                app_id,
                artifact,
                count=config.deployments,
                concurrency=config.concurrency,
                prefix=tag,
                # noop has no enum value: a Deploy naming no target gets the server's default.
                target=deployer_pb2.DEPLOY_TARGET_LOCAL
                if config.mode == "local"
                else deployer_pb2.DEPLOY_TARGET_UNSPECIFIED,
            )
            log(
                f"{tag}: {len(sent.version_ids)} Deploy calls in {sent.elapsed_s:.1f}s, "
                f"{sum(sent.errors.values())} errors"
            )
            if not sent.version_ids:
                raise BenchError(f"{tag}: no Deploy call succeeded ({sent.first_error})")
            await wait_ended(conn, app_id, len(sent.version_ids), [c for c, _ in children])
            wall_s = time.perf_counter() - started
        finally:
            after = cpu_sample(pids, chat.pid)
            if spy is not None:
                await spy.stop()
        log(f"{tag}: every deployment ended after {wall_s:.1f}s")

        notices = await wait_notices(conn, app_id, len(sent.version_ids))
        rows = await deployment_rows(conn, app_id)
        disk = await asyncio.to_thread(check_root, root, app_id, sent.version_ids, artifact)
    checks = build_checks(rows, sent.version_ids, disk, notices, published=config.mode == "local")
    return summarise_phase(processes, pids, sent, rows, before, after, checks)
