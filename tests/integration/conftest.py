"""A chat server per backend, in process: PostgreSQL + Redis, and the embedded default."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.cli import installed
from appforge.services.builder.store import ExecutionStore
from appforge.services.chat.bootstrap import ChatRuntime, build_chat
from appforge.services.common import db, migrate
from appforge.services.common.bus import InProcessBus, RedisBus
from appforge.services.common.settings import Settings

BACKENDS = ("postgres", "embedded")


@dataclass(kw_only=True)
class ChatHandle:
    """A running in-process chat server and a client for it."""

    backend: str
    runtime: ChatRuntime
    channel: grpc.aio.Channel
    stub: chat_pb2_grpc.ChatServiceAsyncStub
    address: str


async def start_chat(
    backend: str, url: str, redis_url: str | None, settings: Settings | None = None
) -> ChatHandle:
    settings = settings or Settings(watch_poll_interval=2.0, shutdown_grace=0.5)
    engine = db.create_engine(url)
    await migrate.upgrade(engine, installed.histories())
    bus = RedisBus(redis_url) if redis_url else InProcessBus()
    runtime = build_chat(settings, host="127.0.0.1", port=0, engine=engine, bus=bus)
    await runtime.server.start()
    channel = grpc.aio.insecure_channel(runtime.server.address)
    return ChatHandle(
        backend=backend,
        runtime=runtime,
        channel=channel,
        stub=chat_pb2_grpc.ChatServiceStub(channel),
        address=runtime.server.address,
    )


async def stop_chat(handle: ChatHandle) -> None:
    await handle.channel.close(None)
    await handle.runtime.server.stop()
    await handle.runtime.close()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str, str | None]:
    """(name, DATABASE_URL, REDIS_URL or None) of each backend the suite runs on."""
    if request.param == "postgres":
        return (
            request.param,
            request.getfixturevalue("pg_url"),
            request.getfixturevalue("redis_url"),
        )
    path: Path = tmp_path_factory.mktemp("embedded") / "appforge.db"
    return request.param, f"sqlite+aiosqlite:///{path}", None


@pytest_asyncio.fixture(scope="session")
async def chat(backend: tuple[str, str, str | None]) -> AsyncIterator[ChatHandle]:
    """The chat service over gRPC, once on PostgreSQL + Redis and once embedded."""
    handle = await start_chat(*backend)
    yield handle
    await stop_chat(handle)


NewApp = Callable[[], Awaitable[chat_pb2.App]]


@pytest.fixture
def new_app(chat: ChatHandle) -> NewApp:
    """A factory of fresh apps (unique names, so tests never share state)."""

    async def create() -> chat_pb2.App:
        return await chat.stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="team-test", name=f"app-{uuid.uuid4().hex[:10]}")
        )

    return create


@pytest.fixture
def execution_id() -> str:
    return str(uuid.uuid4())


@pytest_asyncio.fixture
async def builder_store(backend: tuple[str, str, str | None]) -> AsyncIterator[ExecutionStore]:
    """The builder's store on each backend, schema migrated."""
    engine = db.create_engine(backend[1])
    await migrate.upgrade(engine, installed.histories())
    yield ExecutionStore(engine)
    await engine.dispose()


NewExecution = Callable[[], Awaitable[str]]
EXECUTION_CREATED_US = 1_800_000_000_000_000


@pytest.fixture
def new_execution(builder_store: ExecutionStore) -> NewExecution:
    """A factory of fresh builder executions (created at EXECUTION_CREATED_US)."""

    async def create() -> str:
        execution_id = str(uuid.uuid4())
        await builder_store.create(
            execution_id=execution_id,
            app_id="app",
            model="scripted",
            prompt="build a calculator",
            user_message_id=f"m-{execution_id}",
            owner="builder-1",
            now_us=EXECUTION_CREATED_US,
        )
        return execution_id

    return create
