"""A PostgreSQL of the test's own, stopped under load and started again.

While it is down every call that needs it answers UNAVAILABLE (never INTERNAL or UNKNOWN);
once it is back, no call fails: a pooled connection that died with the server is replaced,
not handed to a request. Chat, the builder and the deployer run as their own processes,
with `--migrate` on the fresh server (the deployer's workers poll it all along); the load is
reads and writes on chat and reads on the builder and the deployer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from tests.e2e.conftest import Spawn, free_port
from tests.helpers import text_item

PG_BIN = Path("/usr/lib/postgresql")
OUTAGE_S = 5.0
WARM_CALLS = 100  # answered before the outage: every pool holds live connections
AFTER_CALLS = 200  # started once the server is back (and the grace passed)
WAIT_S = 60.0  # the bound on waiting for either
CALL_TIMEOUT_S = 5.0
CONCURRENCY = 8
BACK_GRACE_S = 0.5  # a call started this long after the server answers again must succeed


def _bin(name: str) -> str:
    found = sorted(PG_BIN.glob(f"*/bin/{name}"))
    if not found:
        pytest.fail(f"no PostgreSQL server binaries under {PG_BIN} (apt install postgresql)")
    return str(found[-1])


class PostgresCommandFailed(Exception):
    pass


@dataclass(kw_only=True)
class OwnPostgres:
    """A throwaway cluster in a temporary directory, run as the `postgres` user when the
    test runs as root (initdb refuses root)."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, timeout=60)
        if done.returncode:
            raise PostgresCommandFailed(f"{command[0]} exited {done.returncode}: {done.stderr!r}")

    def init(self) -> None:
        self.data.mkdir(parents=True)
        if os.geteuid() == 0:  # pytest's own temporary directories are root's alone
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(self.data.parent, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        log = str(self.data.parent / "postgres.log")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest_asyncio.fixture
async def own_postgres() -> AsyncIterator[OwnPostgres]:
    root = Path(tempfile.mkdtemp(prefix="appforge-own-postgres-"))
    server = OwnPostgres(data=root / "data", port=free_port())
    try:
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        yield server
    finally:
        with contextlib.suppress(PostgresCommandFailed):  # not started, or stopped already
            await asyncio.to_thread(server.stop)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Outcomes:
    """Each call: when it started (monotonic), what it was, and its status."""

    calls: list[tuple[float, str, grpc.StatusCode]] = field(default_factory=list)
    added: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, started: float, name: str, code: grpc.StatusCode) -> None:
        self.calls.append((started, name, code))
        self.added.set()

    def since(self, start: float) -> list[tuple[float, str, grpc.StatusCode]]:
        return [c for c in self.calls if c[0] >= start]

    async def until(self, start: float, count: int) -> None:
        """Until `count` calls started at or after `start` have ended (bounded by WAIT_S)."""
        async with asyncio.timeout(WAIT_S):
            while len(self.since(start)) < count:
                self.added.clear()
                await self.added.wait()


Call = tuple[str, Callable[[], Awaitable[object]], grpc.StatusCode]  # name, call, its answer


async def _load(calls: list[Call], outcomes: Outcomes, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        name, call, expected = calls[n % len(calls)]
        n += 1
        started = time.monotonic()
        try:
            await call()
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        if code == expected:
            code = grpc.StatusCode.OK  # the answer this call gets when all is well
        outcomes.add(started, name, code)
        if code != grpc.StatusCode.OK:
            await asyncio.sleep(0.02)  # a failing dependency: do not spin


async def test_a_database_restart_under_load_fails_nothing_once_it_is_back(
    spawn: Spawn, own_postgres: OwnPostgres
) -> None:
    env = {"DATABASE_URL": own_postgres.url}
    chat_process = await spawn("chat", "--migrate", env=env)
    builder_process = await spawn(
        "builder", "--migrate", env={**env, "APPFORGE_CHAT_ADDR": chat_process.address}
    )
    deployer_process = await spawn(
        "deployer",
        "--migrate",
        "--http-port",
        str(free_port()),
        env={**env, "APPFORGE_CHAT_ADDR": chat_process.address},
    )
    async with (
        grpc.aio.insecure_channel(chat_process.address) as chat_channel,
        grpc.aio.insecure_channel(builder_process.address) as builder_channel,
        grpc.aio.insecure_channel(deployer_process.address) as deployer_channel,
    ):
        chat = chat_pb2_grpc.ChatServiceStub(chat_channel)
        builder = builder_pb2_grpc.BuilderServiceStub(builder_channel)
        deployer = deployer_pb2_grpc.DeployerServiceStub(deployer_channel)
        app = await chat.CreateApp(chat_pb2.CreateAppRequest(team_id="t", name="restart"))
        execution_id = str(uuid.uuid4())
        pieces = iter(range(1, 10**6))

        def upsert() -> Awaitable[object]:
            request = chat_pb2.UpsertAssistantMessageRequest(
                app_id=app.id, execution_id=execution_id, items=[text_item(next(pieces), "x")]
            )
            return chat.UpsertAssistantMessage(request, timeout=CALL_TIMEOUT_S)

        unknown = str(uuid.uuid4())
        calls: list[Call] = [
            (
                "GetApp",
                lambda: chat.GetApp(chat_pb2.GetAppRequest(app_id=app.id), timeout=CALL_TIMEOUT_S),
                grpc.StatusCode.OK,
            ),
            (
                "ListMessages",
                lambda: chat.ListMessages(
                    chat_pb2.ListMessagesRequest(app_id=app.id), timeout=CALL_TIMEOUT_S
                ),
                grpc.StatusCode.OK,
            ),
            ("UpsertAssistantMessage", upsert, grpc.StatusCode.OK),
            (
                "GetExecution",  # an unknown one: NOT_FOUND is the builder reading its table
                lambda: builder.GetExecution(
                    builder_pb2.GetExecutionRequest(execution_id=unknown), timeout=CALL_TIMEOUT_S
                ),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                "GetDeployment",  # an unknown one: NOT_FOUND is the deployer reading its table
                lambda: deployer.GetDeployment(
                    deployer_pb2.GetDeploymentRequest(deployment_id=unknown),
                    timeout=CALL_TIMEOUT_S,
                ),
                grpc.StatusCode.NOT_FOUND,
            ),
        ]
        outcomes, stop = Outcomes(), asyncio.Event()
        workers = [asyncio.create_task(_load(calls, outcomes, stop)) for _ in range(CONCURRENCY)]
        try:
            await outcomes.until(0.0, WARM_CALLS)
            before = list(outcomes.calls)  # every one of them ended before the stop
            down = time.monotonic()
            await asyncio.to_thread(own_postgres.stop)
            await asyncio.sleep(OUTAGE_S)  # the outage itself, under load
            await asyncio.to_thread(own_postgres.start)  # -w: returns once it accepts
            back = time.monotonic()
            await outcomes.until(back + BACK_GRACE_S, AFTER_CALLS)
        finally:
            stop.set()
            await asyncio.gather(*workers)

    during = [c for c in outcomes.calls if down <= c[0] < back]
    after = outcomes.since(back + BACK_GRACE_S)
    failed_before = [c for c in before if c[2] != grpc.StatusCode.OK]
    assert before and not failed_before, failed_before[:5]
    codes_during = {code for _, _, code in during}
    assert codes_during <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes_during
    assert grpc.StatusCode.UNAVAILABLE in codes_during, "the outage was not noticed"
    failed = [(round(t - back, 3), name, code.name) for t, name, code in after if code.value[0]]
    assert len(after) >= AFTER_CALLS and not failed, failed[:10]
