"""One server's turn: its apps (made through it unless given), the warm-up on executions
of their own, then the measured load with CPU samples around it (and py-spy, if asked)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import CALL_TIMEOUT_S, CHANNEL_OPTIONS, BenchError, Child, PySpy, log

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common.auth import Metadata
from appforge.services.common.tls import open_channel

from .config import BenchConfig
from .cpu import cpu_sample
from .load import drive
from .measurement import Measurement, measure
from .script import Request, build_scripts


async def setup_apps(stub: Any, count: int, token: str) -> list[str]:
    """Create `count` apps through the service and post one user message to each."""
    app_ids = []
    for n in range(count):
        app = await stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="bench", name=f"bench-{token}-{n}"),
            timeout=CALL_TIMEOUT_S,
        )
        await stub.PostUserMessage(
            chat_pb2.PostUserMessageRequest(
                app_id=app.id, content="Add e-mail validation to the signup form.", request_id="r1"
            ),
            timeout=CALL_TIMEOUT_S,
        )
        app_ids.append(app.id)
    return app_ids


async def drive_server(
    name: str,
    address: str,
    child: Child,
    app_ids: Sequence[str] | None,
    config: BenchConfig,
    profile: Path | None = None,
    credentials: Metadata | None = None,
) -> tuple[Measurement, list[str]]:
    """Warm up, then measure one server; the app ids used (created when none are given).
    Every call carries `credentials` when given."""
    async with open_channel(address, None, CHANNEL_OPTIONS, credentials) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        if app_ids is None:
            app_ids = await setup_apps(stub, config.apps, secrets.token_hex(3))

        async def upsert(request: Request) -> chat_pb2.ChatMessage:
            reply: chat_pb2.ChatMessage = await stub.UpsertAssistantMessage(
                request, timeout=CALL_TIMEOUT_S
            )
            return reply

        if config.warmup > 0:
            warm = build_scripts(
                app_ids,
                prefix="warm",
                calls=config.warmup,
                executions=max(1, config.warmup * config.executions // config.calls),
                replay_ratio=config.replay_ratio,
                seed=config.seed + 1,
            )
            warm_result = await drive(upsert, warm, config.concurrency)
            log(f"{name}: warmed up with {warm_result.ok}/{warm_result.calls} calls")
        scripts = build_scripts(
            app_ids,
            prefix="exec",
            calls=config.calls,
            executions=config.executions,
            replay_ratio=config.replay_ratio,
            seed=config.seed,
        )
        spy = PySpy(profile, child.pid) if profile and child.pid else None
        if spy:
            await spy.start()
        before = cpu_sample(child.pid)
        try:
            load = await drive(upsert, scripts, config.concurrency)
        finally:
            after = cpu_sample(child.pid)
            if spy:
                await spy.stop()
    result = measure(name, load, before, after)
    log(
        f"{name}: {result.calls_per_s:.0f} calls/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, {result.errors} errors"
    )
    if load.ok == 0:
        raise BenchError(f"{name}: no call succeeded ({load.first_error})")
    return result, list(app_ids)
