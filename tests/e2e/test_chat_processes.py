"""The chat service as two OS processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.flow.v1 import flow_pb2
from appforge.services.common import db
from tests.e2e.conftest import Spawn
from tests.helpers import text_item, upsert, watching

WORKERS, CALLS = 4, 50


async def _stub(address: str) -> tuple[grpc.aio.Channel, chat_pb2_grpc.ChatServiceAsyncStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, chat_pb2_grpc.ChatServiceStub(channel)


async def test_four_processes_fifty_concurrent_upserts_two_servers_one_message(
    spawn: Spawn, pg_url: str
) -> None:
    server_a, server_b = await asyncio.gather(spawn("chat"), spawn("chat"))
    channel, stub = await _stub(server_a.address)
    app = await stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"conc-{uuid.uuid4().hex[:8]}")
    )
    execution_id = str(uuid.uuid4())
    worker = Path(__file__).with_name("upsert_worker.py")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(worker),
            str(w),
            str(CALLS),
            app.id,
            execution_id,
            server_a.address,
            server_b.address,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for w in range(WORKERS)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    reports = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        reports.append(json.loads(out))
    assert all(r["errors"] == [] for r in reports), reports
    assert len({i for r in reports for i in r["message_ids"]}) == 1

    total = WORKERS * CALLS
    message = await stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
    )
    assert [i.seq for i in message.flow] == list(range(1, total + 1))
    assert [i.timestamp.ToMicroseconds() for i in message.flow] == [
        1_800_000_000_000_000 + s for s in range(1, total + 1)
    ]
    for item in message.flow:
        if item.seq % 2:
            (only,) = item.tools.calls
            assert only.call_id == f"call-{item.seq}"
            assert only.status == flow_pb2.TOOL_STATUS_SUCCEEDED
            assert only.result_json == f'{{"seq":{item.seq}}}'
        else:
            assert item.message.text == f"text {item.seq}"
    assert message.content == "\n\n".join(f"text {s}" for s in range(2, total + 1, 2))

    engine = db.create_engine(pg_url)
    async with engine.connect() as conn:

        async def count(table: str) -> int:
            query = sa.text(f"SELECT count(*) FROM {table} WHERE execution_id = :e")
            return int(await conn.scalar(query, {"e": execution_id}))

        assert await count("chat_messages") == 1
        assert await count("chat_flow_items") == total
        assert await count("chat_tool_calls") == total // 2
    await engine.dispose()
    listed = await stub.ListMessages(chat_pb2.ListMessagesRequest(app_id=app.id))
    assert [m.id for m in listed.messages] == [message.id]
    await channel.close(None)


async def test_watcher_on_b_sees_writes_through_a_and_catches_up_after_reconnect(
    spawn: Spawn,
) -> None:
    server_a, server_b = await asyncio.gather(spawn("chat"), spawn("chat"))
    channel_a, stub_a = await _stub(server_a.address)
    channel_b, stub_b = await _stub(server_b.address)
    app = await stub_a.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"fan-{uuid.uuid4().hex[:8]}")
    )
    execution_id = str(uuid.uuid4())
    async with watching(stub_b, app.id) as watcher:
        await stub_a.UpsertAssistantMessage(upsert(app.id, execution_id, text_item(1, "from A")))
        event = await watcher.next(timeout=10)
        assert event.message.execution_id == execution_id and event.message.content == "from A"
        last = watcher.last_cursor
    # Cut off: three changes happen through A while nobody watches.
    await stub_a.UpsertAssistantMessage(upsert(app.id, execution_id, text_item(2, "while away")))
    user = await stub_a.PostUserMessage(
        chat_pb2.PostUserMessageRequest(app_id=app.id, content="next")
    )
    await stub_a.UpsertAssistantMessage(
        upsert(app.id, execution_id, status=chat_pb2.MESSAGE_STATUS_COMPLETED)
    )
    async with watching(stub_b, app.id, after_cursor=last) as again:
        first, second = await again.next(), await again.next()
        assert first.message.id == user.id
        assert second.message.execution_id == execution_id
        assert second.message.content == "from A\n\nwhile away"
        assert second.message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
        # …and live changes through A keep arriving on B.
        await stub_a.UpsertAssistantMessage(
            upsert(app.id, execution_id, text_item(3, "live again"))
        )
        live = await again.next()
        assert live.cursor == second.cursor + 1 and live.message.content.endswith("live again")
    await channel_a.close(None)
    await channel_b.close(None)


async def test_sigterm_reports_not_serving_then_exits_cleanly(spawn: Spawn) -> None:
    server = await spawn("chat")
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="appforge.chat.v1.ChatService"))
        assert (
            await asyncio.wait_for(watch.read(), 5)
        ).status == health_pb2.HealthCheckResponse.SERVING
        server.process.send_signal(signal.SIGTERM)
        assert (
            await asyncio.wait_for(watch.read(), 5)
        ).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    assert await asyncio.to_thread(server.process.wait, 15) == 0
