"""The run, wired: a bench database, chat, the deployer, the fake model and the builder, the
apps, the watchers and the bus monitor; then the builder phase, the baseline, the report."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from harness import (
    CALL_TIMEOUT_S,
    CHANNEL_OPTIONS,
    MIGRATE_TIMEOUT_S,
    UNCAPPED_BUILDS,
    Child,
    appforge_command,
    bench_database,
    free_port,
    log,
    run_command,
    running,
    serve_child,
)

from appforge.api.builder.v1 import builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc

from .baseline import Emulator, emulate_worker
from .bus import BusMonitor
from .config import BenchConfig
from .cpu import server_pids
from .load import build_worker
from .model import FakeModel
from .phase import Services, run_phase
from .report import report, summarise
from .watchers import WatcherPool, merge_watchers


async def create_apps(stub: Any, count: int) -> list[str]:
    """`count` apps, each with one user message (a watcher's first event proves it is on)."""
    token = secrets.token_hex(3)
    apps = []
    for n in range(count):
        app = await stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="bench", name=f"builder-bench-{token}-{n}"),
            timeout=CALL_TIMEOUT_S,
        )
        await stub.PostUserMessage(
            chat_pb2.PostUserMessageRequest(app_id=app.id, content="Hello, bench."),
            timeout=CALL_TIMEOUT_S,
        )
        apps.append(app.id)
    return apps


async def start_services(
    config: BenchConfig, dsn: str, workdir: Path, stack: contextlib.AsyncExitStack
) -> tuple[dict[str, Child], dict[str, str], FakeModel]:
    """chat, deployer, the fake model and the builder, each serving; their addresses."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_URL": config.redis_url,
        "APPFORGE_DATA_DIR": str(workdir / "data"),
        "APPFORGE_LOG_LEVEL": config.log_level,
    }
    logs = config.logs or workdir
    await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
    ports = {name: free_port() for name in ("chat", "builder", "deployer", "http")}
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    chat = serve_child("chat", ports["chat"], env, logs)
    await stack.enter_async_context(running(chat, addresses["chat"]))
    deploy_env = {
        **env,
        "APPFORGE_CHAT_ADDR": addresses["chat"],
        "APPFORGE_DEPLOY_ROOT": str(workdir / "deploys"),
        "APPFORGE_DEPLOY_PUBLIC_URL": f"http://{addresses['http']}",
    }
    deployer = serve_child(
        "deployer", ports["deployer"], deploy_env, logs, "--http-port", str(ports["http"])
    )
    await stack.enter_async_context(running(deployer, addresses["deployer"]))
    fake = await stack.enter_async_context(FakeModel(config).serving())
    builder_env = {
        **env,
        "APPFORGE_CHAT_ADDR": addresses["chat"],
        "APPFORGE_DEPLOYER_ADDR": addresses["deployer"],
        "APPFORGE_MODEL": "openai",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "x",
        "APPFORGE_OPENAI_MODEL": "bench",
        "APPFORGE_MAX_TURNS": str(config.max_turns + 5),
        **UNCAPPED_BUILDS,
    }
    builder = serve_child("builder", ports["builder"], builder_env, logs)
    await stack.enter_async_context(running(builder, addresses["builder"]))
    return {"chat": chat, "deployer": deployer, "builder": builder}, addresses, fake


async def run_bench(config: BenchConfig, workdir: Path, watch_script: Path) -> dict[str, Any]:
    """Both phases against the same services, apps and watchers; the results as plain data.
    `watch_script` is the entry point the watcher processes run (with `--watch-child`)."""
    async with bench_database(config.admin_dsn) as dsn, contextlib.AsyncExitStack() as stack:
        children, addresses, fake = await start_services(config, dsn, workdir, stack)
        log(", ".join(f"{name} pid {child.pid}" for name, child in children.items()))
        chat_channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(addresses["chat"], options=CHANNEL_OPTIONS)
        )
        builder_channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(addresses["builder"], options=CHANNEL_OPTIONS)
        )
        chat = chat_pb2_grpc.ChatServiceStub(chat_channel)
        builder = builder_pb2_grpc.BuilderServiceStub(builder_channel)
        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)

        apps = await create_apps(chat, config.apps)
        assignment = [apps[w % len(apps)] for w in range(config.watchers)]
        pool = WatcherPool(
            watch_script,
            addresses["chat"],
            assignment,
            config.watcher_procs,
            config.logs or workdir,
        )
        stack.push_async_callback(pool.stop)
        await pool.start()
        log(f"{config.watchers} watchers on {len(apps)} app(s) ready (pids {pool.pids})")
        bus = await stack.enter_async_context(
            BusMonitor(config.redis_url, Counter(assignment)).listening()
        )
        services = Services(
            children=children,
            watchers=pool,
            chat=chat,
            builder=builder,
            conn=conn,
            fake=fake,
            servers=await server_pids(conn, config.redis_url),
            database=dsn.rpartition("/")[2],
            bus=bus,
        )

        built = await run_phase(
            "builder", services, config, apps, lambda phase, n: build_worker(builder, phase, n)
        )
        emulator_token = secrets.token_hex(3)
        direct = await run_phase(
            "baseline",
            services,
            config,
            apps,
            lambda phase, n: emulate_worker(Emulator(chat, phase, emulator_token), phase, n),
        )
        log("collecting the watchers' records")
        windows = [(run.name, run.window.start_us, run.window.end_us) for run in (built, direct)]
        per_process = await pool.report(windows)
    merged = [merge_watchers([proc[n] for proc in per_process]) for n in range(len(windows))]
    return report(config, summarise(built, merged[0], config), summarise(direct, merged[1], config))
