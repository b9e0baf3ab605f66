"""The run, wired: a bench database and migrations, `appforge serve chat`, two apps (one
for the warm-up, one watched), the watcher process, the measured calls, the final read."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from chat_upsert_bench.phase import setup_apps
from harness import (
    CALL_TIMEOUT_S,
    MIGRATE_TIMEOUT_S,
    BenchError,
    PySpy,
    appforge_command,
    bench_database,
    free_port,
    log,
    run_command,
    running,
    serve_child,
)

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc

from .calls import growth_requests
from .config import GrowthConfig
from .cpu import Probe
from .measure import Growth, send_calls
from .report import report
from .watcher import RECEIVE_OPTIONS, Watcher


@dataclass(frozen=True, kw_only=True)
class Chat:
    """The chat process as the run reaches it."""

    address: str
    stub: Any
    probe: Probe


async def _warm_up(chat: Chat, app_id: str, token: str, config: GrowthConfig) -> None:
    """Calls of an execution of their own, on an app nobody watches: the connections,
    pools and prepared statements are warm when the measured calls start."""
    requests = growth_requests(
        app_id, f"warm-{token}", items=config.warmup, item_bytes=config.item_bytes
    )
    for request in requests:
        await chat.stub.UpsertAssistantMessage(request, timeout=CALL_TIMEOUT_S)
    log(f"warmed up with {len(requests)} calls")


async def _measure(
    chat: Chat, config: GrowthConfig, workdir: Path, script: Path
) -> tuple[Growth, chat_pb2.ChatMessage]:
    token = secrets.token_hex(3)
    warm_app, app_id = await setup_apps(chat.stub, 2, token)
    execution_id = f"growth-{token}"
    requests = growth_requests(
        app_id,
        execution_id,
        items=config.items,
        item_bytes=config.item_bytes,
        tools_every=config.tools_every,
    )
    log_path = workdir / "watcher.log"
    async with Watcher(script, chat.address, app_id, config.view, log_path) as watcher:
        chat.probe.watcher_pid = watcher.pid
        log(f"watcher ({config.view}) ready (pid {watcher.pid})")
        # Right before the measured calls: no idle gap (the watcher's start) between the two.
        if config.warmup:
            await _warm_up(chat, warm_app, token, config)
        log(f"sending {len(requests)} calls")
        pid = chat.probe.chat_pid
        spy = PySpy(config.py_spy, pid) if config.py_spy and pid else None
        if spy:
            await spy.start()
        try:
            growth = await send_calls(
                chat.stub, requests, window=config.window, probe=chat.probe, watcher=watcher
            )
        finally:
            if spy:
                await spy.stop()
    if growth.last_reply.version == 0:
        raise BenchError(f"no call succeeded ({growth.first_error})")
    final = await chat.stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id), timeout=CALL_TIMEOUT_S
    )
    return growth, final


@contextlib.asynccontextmanager
async def _connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


async def run_bench(config: GrowthConfig, workdir: Path, script: Path) -> dict[str, Any]:
    """The whole run, in a database of its own, dropped at the end. `script` is the bench's
    entry point, which is the watcher process when given `--watch-child`."""
    async with bench_database(config.admin_dsn) as dsn:
        env = {
            **os.environ,
            "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "REDIS_URL": config.redis_url,
        }
        await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
        port = free_port()
        address = f"127.0.0.1:{port}"
        server = serve_child("chat", port, env, workdir)
        async with (
            running(server, address),
            _connected(dsn) as conn,
            grpc.aio.insecure_channel(address, options=RECEIVE_OPTIONS) as channel,
        ):
            log(f"chat serving on {address} (pid {server.pid})")
            chat = Chat(
                address=address,
                stub=chat_pb2_grpc.ChatServiceStub(channel),
                probe=Probe(conn, server.pid),
            )
            growth, final = await _measure(chat, config, workdir, script)
    return report(config, growth, final)
