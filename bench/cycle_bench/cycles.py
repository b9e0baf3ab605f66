"""One cycle of each kind (Build -> served, Deploy -> served), run under a bound, many at a
time, and measured as a phase with CPU sampled around it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import grpc
from harness import CALL_TIMEOUT_S, BenchError, PySpy, log

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.api.flow.v1 import flow_pb2

from .config import BenchConfig
from .cpu import cpu_sample, cpu_usage
from .samples import Sample

CYCLE_TIMEOUT_S = 60.0  # one cycle, Build to served
SERVE_TIMEOUT_S = 10.0  # SUCCEEDED seen, and the URL still not serving: the cycle failed
GET_RETRY_S = 0.005

SUCCEEDED = deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
TERMINAL = frozenset(
    {
        deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED,
        deployer_pb2.DEPLOYMENT_STATUS_FAILED,
        deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT,
        deployer_pb2.DEPLOYMENT_STATUS_CANCELLED,
    }
)


class CycleError(Exception):
    """A cycle that did not end with the calculator served."""


@dataclass(frozen=True, kw_only=True)
class Clients:
    """The stubs and the HTTP session every cycle shares (one channel per service)."""

    chat: chat_pb2_grpc.ChatServiceAsyncStub
    builder: builder_pb2_grpc.BuilderServiceAsyncStub
    deployer: deployer_pb2_grpc.DeployerServiceAsyncStub
    http: aiohttp.ClientSession
    prompt: str


class Stopwatch:
    """ms since the call, by the monotonic clock; server stamps placed by the wall clock."""

    def __init__(self) -> None:
        self.wall_us = time.time_ns() // 1000
        self.start = time.perf_counter()

    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    def stamp_ms(self, stamp: Any) -> float:
        """A protobuf Timestamp of the deployer's clock, as ms after the call."""
        return float(stamp.ToMicroseconds() - self.wall_us) / 1000


async def new_app(clients: Clients) -> str:
    app = await clients.chat.CreateApp(
        chat_pb2.CreateAppRequest(team_id="bench", name=f"cycle-{uuid.uuid4().hex[:12]}"),
        timeout=CALL_TIMEOUT_S,
    )
    return str(app.id)


async def build_cycle(clients: Clients, sample: Sample) -> None:
    """CreateApp, then timed: Build to its finished event, the deployment, the URL."""
    app_id = sample.ids["app"] = await new_app(clients)
    sample.stage = "Build stream"
    watch = Stopwatch()
    request = builder_pb2.BuildRequest(app_id=app_id, prompt=clients.prompt)
    finished = None
    async for event in clients.builder.Build(request, timeout=CYCLE_TIMEOUT_S):
        kind = event.WhichOneof("event")
        if kind == "started":
            sample.events["started"] = watch.ms()
            sample.ids["execution"] = event.started.execution_id
        elif kind == "item":
            sample.items += 1
        elif kind == "finished":
            sample.events["finished"] = watch.ms()
            finished = event.finished
    if finished is None:
        raise CycleError("the Build stream ended without a finished event")
    if finished.status != builder_pb2.EXECUTION_STATUS_SUCCEEDED or not finished.deployment_id:
        status = builder_pb2.ExecutionStatus.Name(finished.status)
        raise CycleError(f"build {status}: {finished.error or 'no deployment'}")
    sample.app_version_id = finished.app_version_id
    await follow_and_serve(clients, finished.deployment_id, watch, sample)


async def deploy_cycle(clients: Clients, files: Sequence[flow_pb2.File], sample: Sample) -> None:
    """CreateApp, then timed: Deploy of the build's files, the deployment, the URL."""
    app_id = sample.ids["app"] = await new_app(clients)
    token = uuid.uuid4().hex
    request = deployer_pb2.DeployRequest(
        app_id=app_id,
        app_version_id=f"bench-version-{token}",
        execution_id=f"bench-execution-{token}",
        files=files,
        target=deployer_pb2.DEPLOY_TARGET_LOCAL,
    )
    sample.stage = "Deploy"
    watch = Stopwatch()
    deployment = await clients.deployer.Deploy(request, timeout=CALL_TIMEOUT_S)
    sample.events["replied"] = watch.ms()
    await follow_and_serve(clients, deployment.id, watch, sample)


async def follow_and_serve(
    clients: Clients, deployment_id: str, watch: Stopwatch, sample: Sample
) -> None:
    """Watch the deployment to SUCCEEDED, then GET its URL until the calculator is served."""
    sample.ids["deployment"] = deployment_id
    sample.stage = "WatchDeployment"
    last = None
    stream = clients.deployer.WatchDeployment(
        deployer_pb2.WatchDeploymentRequest(deployment_id=deployment_id),
        timeout=CYCLE_TIMEOUT_S,
    )
    async for deployment in stream:
        last = deployment
        if deployment.status in TERMINAL:
            sample.events["seen"] = watch.ms()
            break
    stream.cancel()
    if last is None or last.status != SUCCEEDED:
        status = deployer_pb2.DeploymentStatus.Name(last.status) if last else "no state"
        raise CycleError(f"deployment {status}: {last.error if last else ''}")
    sample.events["queued"] = watch.stamp_ms(last.created_at)
    if last.attempts:
        sample.events["claimed"] = watch.stamp_ms(last.attempts[0].started_at)
        sample.events["published"] = watch.stamp_ms(last.attempts[-1].finished_at)
    await serve(clients.http, last.url, watch, sample)


async def serve(http: aiohttp.ClientSession, url: str, watch: Stopwatch, sample: Sample) -> None:
    """GET `url` until it answers 200 with the calculator; then `<url>app.js` must be 200."""
    if not url:
        raise CycleError("the deployment SUCCEEDED without a URL")
    sample.stage = f"GET {url}"
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    status, body = 0, ""
    while time.monotonic() < deadline:
        sample.get_tries += 1
        async with http.get(url) as response:
            status, body = response.status, await response.text()
        if status == 200 and "calculator" in body.lower():
            sample.events["served"] = watch.ms()
            break
        await asyncio.sleep(GET_RETRY_S)
    else:
        raise CycleError(f"{url} not serving the calculator after {SERVE_TIMEOUT_S:.0f}s: {status}")
    sample.stage = f"GET {url}app.js"
    async with http.get(url + "app.js") as response:
        await response.read()
        if response.status != 200:
            raise CycleError(f"{url}app.js answered {response.status}")
    sample.stage = "done"


async def guarded(clients: Clients, cycle: Callable[[Sample], Awaitable[None]]) -> Sample:
    """Run one cycle under its bound; an error becomes a failed sample, not a crash."""
    sample = Sample()
    try:
        async with asyncio.timeout(CYCLE_TIMEOUT_S):
            await cycle(sample)
    except TimeoutError:
        sample.error = f"no end within {CYCLE_TIMEOUT_S:.0f}s, stuck in {sample.stage}"
    except grpc.aio.AioRpcError as exc:
        sample.error = f"{exc.code().name} in {sample.stage}: {exc.details()}"
    except (CycleError, aiohttp.ClientError, OSError) as exc:
        sample.error = f"{type(exc).__name__} in {sample.stage}: {exc}"
    if sample.error:
        log(f"cycle failed: {sample.error}; events {sample.events}; ids {sample.ids}")
        await diagnose(clients, sample)
    return sample


async def diagnose(clients: Clients, sample: Sample) -> None:
    """Log what the services say about a failed cycle's deployment (best effort)."""
    deployment_id = sample.ids.get("deployment")
    if not deployment_id:
        return
    try:
        deployment = await clients.deployer.GetDeployment(
            deployer_pb2.GetDeploymentRequest(deployment_id=deployment_id), timeout=5
        )
    except grpc.aio.AioRpcError as exc:
        log(f"  GetDeployment({deployment_id}): {exc.code().name}")
        return
    status = deployer_pb2.DeploymentStatus.Name(deployment.status)
    attempts = [
        (a.number, deployer_pb2.AttemptOutcome.Name(a.outcome), a.worker_id, a.error)
        for a in deployment.attempts
    ]
    log(f"  deployment {deployment_id}: {status}, attempts {attempts}, url {deployment.url!r}")


async def run_cycles(
    count: int, concurrency: int, clients: Clients, cycle: Callable[[Sample], Awaitable[None]]
) -> tuple[list[Sample], float]:
    """`count` cycles, `concurrency` at a time; the samples and the wall time."""
    samples: list[Sample] = []
    remaining = count

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            samples.append(await guarded(clients, cycle))

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    return samples, time.perf_counter() - started


@dataclass(kw_only=True)
class PhaseResult:
    """One kind of cycle, measured."""

    samples: list[Sample]
    wall_s: float
    cpu: dict[str, Any]


async def measure(
    config: BenchConfig,
    clients: Clients,
    cycle: Callable[[Sample], Awaitable[None]],
    pids: dict[str, int | None],
    conn: asyncpg.Connection,
    spy_pid: int | None = None,
) -> PhaseResult:
    """Warm up, then run the measured cycles with CPU sampled around them."""
    warm, _ = await run_cycles(config.warmup, 1, clients, cycle)
    for sample in warm:
        if not sample.ok:
            raise BenchError(f"a warm-up cycle failed: {sample.error}")
    spy = None
    if spy_pid is not None and config.py_spy is not None:
        spy = PySpy(config.py_spy, spy_pid)
        await spy.start()
    before = await cpu_sample(pids, conn)
    try:
        samples, wall_s = await run_cycles(config.builds, config.concurrency, clients, cycle)
    finally:
        after = await cpu_sample(pids, conn)
        if spy is not None:
            await spy.stop()
    return PhaseResult(samples=samples, wall_s=wall_s, cpu=cpu_usage(before, after, len(samples)))
