"""The run, wired: a bench database, chat, the deployer and the builder, the clients; then
the build cycles, the deploy-only baseline, the report."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
from harness import (
    CALL_TIMEOUT_S,
    CHANNEL_OPTIONS,
    MIGRATE_TIMEOUT_S,
    UNCAPPED_BUILDS,
    BenchError,
    Child,
    appforge_command,
    bench_database,
    free_port,
    log,
    run_command,
    running,
    serve_child,
)

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2_grpc
from appforge.api.flow.v1 import flow_pb2

from .config import SERVICES, BenchConfig
from .cycles import Clients, build_cycle, deploy_cycle, measure
from .report import report
from .samples import Sample


async def start_services(
    config: BenchConfig, dsn: str, workdir: Path, stack: contextlib.AsyncExitStack
) -> tuple[dict[str, Child], dict[str, str]]:
    """migrate, then chat, deployer and builder, each serving; their addresses."""
    ports = {name: free_port() for name in (*SERVICES, "http")}
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **os.environ,
        "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_URL": config.redis_url,
        "APPFORGE_CHAT_ADDR": addresses["chat"],
        "APPFORGE_DEPLOYER_ADDR": addresses["deployer"],
        "APPFORGE_DATA_DIR": str(workdir / "data"),
        "APPFORGE_DEPLOY_ROOT": str(workdir / "deploys"),
        "APPFORGE_DEPLOY_PUBLIC_URL": f"http://{addresses['http']}",
        "APPFORGE_DEPLOY_POLL_INTERVAL": str(config.poll_interval),
        "APPFORGE_DEPLOY_WORKERS": str(config.workers),
        "APPFORGE_MODEL": "scripted",
        # The scripted model types its replies at a human pace by default; the cycle is
        # timed without that pause (the system's own cost, not a chosen delay).
        "APPFORGE_SCRIPTED_STREAM_MS": "0",
        "APPFORGE_LOG_LEVEL": config.log_level,
        **UNCAPPED_BUILDS,
    }
    await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
    children = {
        "chat": serve_child("chat", ports["chat"], env, workdir),
        "deployer": serve_child(
            "deployer", ports["deployer"], env, workdir, "--http-port", str(ports["http"])
        ),
        "builder": serve_child("builder", ports["builder"], env, workdir),
    }
    for name, child in children.items():
        await stack.enter_async_context(running(child, addresses[name]))
    return children, addresses


async def app_files(clients: Clients, samples: Sequence[Sample]) -> list[flow_pb2.File]:
    """The files of a version the builds made, read once with GetAppVersion."""
    version_id = next((s.app_version_id for s in samples if s.ok and s.app_version_id), "")
    if not version_id:
        raise BenchError("no build succeeded: nothing to deploy for the baseline")
    version = await clients.builder.GetAppVersion(
        builder_pb2.GetAppVersionRequest(app_version_id=version_id), timeout=CALL_TIMEOUT_S
    )
    return list(version.files)


def _check_alive(children: dict[str, Child]) -> None:
    for child in children.values():
        if child.proc is not None and child.proc.returncode is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}")


async def run_bench(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    async with bench_database(config.admin_dsn) as dsn, contextlib.AsyncExitStack() as stack:
        children, addresses = await start_services(config, dsn, workdir, stack)
        pids = {name: child.pid for name, child in children.items()}
        log(", ".join(f"{name} pid {pid}" for name, pid in pids.items()))
        channels = {
            name: await stack.enter_async_context(
                grpc.aio.insecure_channel(addresses[name], options=CHANNEL_OPTIONS)
            )
            for name in SERVICES
        }
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S))
        )
        clients = Clients(
            chat=chat_pb2_grpc.ChatServiceStub(channels["chat"]),
            builder=builder_pb2_grpc.BuilderServiceStub(channels["builder"]),
            deployer=deployer_pb2_grpc.DeployerServiceStub(channels["deployer"]),
            http=http,
            prompt=config.prompt,
        )
        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)
        spy_pid = pids[config.py_spy_service]
        log(f"cycle: {config.warmup} warm-up + {config.builds} builds")
        cycle = await measure(
            config, clients, lambda sample: build_cycle(clients, sample), pids, conn, spy_pid
        )
        _check_alive(children)
        files = await app_files(clients, cycle.samples)
        log(f"baseline: {config.warmup} warm-up + {config.builds} deploys of {len(files)} files")
        baseline = await measure(
            config, clients, lambda sample: deploy_cycle(clients, files, sample), pids, conn
        )
        _check_alive(children)
    return report(config, files, cycle, baseline)
