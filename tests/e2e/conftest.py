"""Services as separate OS processes (`appforge serve …`) on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appforge.services.common.tls import TlsSettings, open_channel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(kw_only=True)
class ServiceProcess:
    """One `appforge serve` process."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


# `spawn("chat", *args, env=..., port=...)`: a task that ends when the process serves.
Spawn = Callable[..., "asyncio.Task[ServiceProcess]"]


# Reconnect quickly while the child is still binding its port (gRPC's default backoff is 1 s).
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


async def _serving(address: str, tls: TlsSettings | None) -> None:
    """Returns once the server's health Watch stream says SERVING."""
    async with open_channel(address, tls, _FAST_RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:  # a stream that breaks while the server starts is opened again
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for reply in stub.Watch(health_pb2.HealthCheckRequest(), wait_for_ready=True):
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return


@contextlib.contextmanager
def _exit_of(process: subprocess.Popen[bytes]) -> Iterator[asyncio.Future[None]]:
    """A future that completes when `process` exits (a pidfd watched by the event loop)."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    fd = os.pidfd_open(process.pid)

    def _readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, _readable)
    try:
        yield exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def wait_serving(
    address: str,
    process: subprocess.Popen[bytes],
    timeout: float = 30.0,
    tls: TlsSettings | None = None,
) -> None:
    """Until the health service says SERVING (over TLS with `tls`); fails at once if the
    process exits first."""
    with _exit_of(process) as exited:
        serving = asyncio.ensure_future(_serving(address, tls))
        try:
            done, _ = await asyncio.wait(
                {serving, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    if serving in done and not serving.cancelled():
        return
    if exited in done:
        raise AssertionError(f"service at {address} exited with {process.wait()}")
    raise AssertionError(f"service at {address} not SERVING within {timeout}s")


@pytest.fixture(scope="session")
def service_env(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment of every service process: the run's PostgreSQL database and Redis."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APPFORGE_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        APPFORGE_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        APPFORGE_LOG_LEVEL="WARNING",
        APPFORGE_SHUTDOWN_GRACE="2",
        APPFORGE_WATCH_POLL_INTERVAL="2",
        APPFORGE_METRICS_PORT="0",  # many processes per test: no fixed ports
        # The session's database keeps earlier tests' executions (some killed mid-run) of the
        # same teams: the fair share is tested on its own.
        APPFORGE_TEAM_MAX_RUNNING_BUILDS="100000",
        # Tokens are the subject of their own tests (test_auth_matrix, the golden flows, which
        # run with them): the others call without, as `serve --insecure` allows.
        APPFORGE_INSECURE="true",
    )
    return env


@pytest_asyncio.fixture
async def spawn(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start `appforge serve SERVICE` processes; all are stopped after the test."""
    started: list[ServiceProcess] = []

    async def start(
        service: str, args: Sequence[str], env: Mapping[str, str], port: int | None
    ) -> ServiceProcess:
        port = port or free_port()
        log_path = tmp_path / f"{service}-{port}.log"
        command = [sys.executable, "-m", "appforge.cli", "serve", service, "--port", str(port)]
        handle_env = {**service_env, **env}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, *args],
                env=handle_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        handle = ServiceProcess(
            name=service, address=f"127.0.0.1:{port}", process=process, log_path=log_path
        )
        started.append(handle)
        await wait_serving(handle.address, process, tls=TlsSettings.from_env(handle_env))
        return handle

    def spawn_one(
        service: str, *args: str, env: Mapping[str, str] | None = None, port: int | None = None
    ) -> asyncio.Task[ServiceProcess]:
        return asyncio.ensure_future(start(service, args, env or {}, port))

    yield spawn_one
    for handle in started:
        handle.terminate()


@dataclass(frozen=True, kw_only=True)
class Cli:
    """What one `appforge` command did."""

    code: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def event(self, kind: str) -> dict[str, Any]:
        return next(e for e in self.events() if e["event"] == kind)


async def appforge(*args: str, env: Mapping[str, str] | None = None, timeout: float = 90) -> Cli:
    """Run `appforge ARGS` as its own process, bounded by `timeout`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appforge.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Cli(code=process.returncode, stdout=out.decode(), stderr=err.decode())
