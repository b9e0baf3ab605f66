"""A database or Redis that is down is UNAVAILABLE, never INTERNAL or a hang."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.chat.bootstrap import build_chat
from appforge.services.common import db
from appforge.services.common.bus import RedisBus
from appforge.services.common.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


@pytest_asyncio.fixture
async def orphan_chat() -> AsyncIterator[chat_pb2_grpc.ChatServiceAsyncStub]:
    """A chat server whose PostgreSQL and Redis are both unreachable."""
    engine = db.create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/none")
    bus = RedisBus(f"redis://127.0.0.1:{_closed_port()}/0", subscribe_timeout=2)
    runtime = build_chat(Settings(), host="127.0.0.1", port=0, engine=engine, bus=bus)
    await runtime.server.start()
    async with grpc.aio.insecure_channel(runtime.server.address) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)
    await runtime.server.stop()
    await runtime.close()


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        ("CreateApp", chat_pb2.CreateAppRequest(team_id="t", name="n")),
        ("GetMessage", chat_pb2.GetMessageRequest(message_id=str(uuid.uuid4()))),
        ("PostUserMessage", chat_pb2.PostUserMessageRequest(app_id="a", content="hi")),
    ],
    ids=["create", "get", "post"],
)
async def test_database_down_is_unavailable(
    orphan_chat: chat_pb2_grpc.ChatServiceAsyncStub, rpc: str, request_: object
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(orphan_chat, rpc)(request_, timeout=20)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "database unavailable" in (err.value.details() or "")


async def test_redis_down_fails_a_watch_with_unavailable(redis_url: str, pg_url: str) -> None:
    from tests.integration.conftest import start_chat, stop_chat

    handle = await start_chat("postgres", pg_url, redis_url)
    app = await handle.stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"r-{uuid.uuid4().hex[:8]}")
    )
    await stop_chat(handle)
    # Same database, but a Redis nobody answers on.
    engine = db.create_engine(pg_url)
    bus = RedisBus(f"redis://127.0.0.1:{_closed_port()}/0", subscribe_timeout=2)
    runtime = build_chat(Settings(), host="127.0.0.1", port=0, engine=engine, bus=bus)
    await runtime.server.start()
    try:
        async with grpc.aio.insecure_channel(runtime.server.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            # Writes still succeed: the change is committed, fan-out is best effort.
            posted = await stub.PostUserMessage(
                chat_pb2.PostUserMessageRequest(app_id=app.id, content="hi")
            )
            assert posted.cursor == 1
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.WatchApp(chat_pb2.WatchAppRequest(app_id=app.id), timeout=20):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "redis unavailable" in (err.value.details() or "")
    finally:
        await runtime.server.stop()
        await runtime.close()
