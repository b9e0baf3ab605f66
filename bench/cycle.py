"""Benchmark: from the Build call to the URL serving the calculator, and the deploy leg alone.

What is measured, in one run, with chat, builder and deployer as separate OS processes
(`appforge serve ...` after `appforge migrate`) on PostgreSQL (asyncpg) and Redis, the
builder on its default `scripted` model, the deployer on the `local` target and its own
HTTP server:

1. **cycle** - `--builds` times: `ChatService.CreateApp` (not timed), then, timed from just
   before the call, `BuilderService.Build(app_id, prompt="build a calculator")` read to its
   `finished` event, `DeployerService.WatchDeployment(deployment_id)` followed to
   SUCCEEDED, and HTTP GETs of the deployment's URL until one answers 200 with a page that
   says "calculator" (then `<url>app.js` must answer 200 too; not timed). The clock stops
   at that first successful GET.
2. **baseline** - the same cycle's deploy leg alone, `--builds` times: a fresh app
   (`CreateApp`, not timed), then, timed, `DeployerService.Deploy` of the same files (read
   once with `BuilderService.GetAppVersion` from a build of phase 1) under a fresh
   `app_version_id`, followed to SUCCEEDED and served, exactly as above.

Every cycle gets its own app, so the URL cannot answer with an earlier version. Cycles run
one after another (`--concurrency 1`, latency) or `--concurrency` at a time; `--warmup`
cycles of each kind go first and are not measured.

Printed: p50/p95/max of the cycle and of its phases (Build -> finished event; finished ->
SUCCEEDED seen on the watch; SUCCEEDED -> served), the same for the baseline (Deploy call;
reply -> SUCCEEDED seen; SUCCEEDED -> served), the ratio cycle/baseline and how much the
build adds; a timeline of both (ms after the call: the started event, the deployment queued,
its attempt claimed by a worker, the attempt finished with the files published, the finished
event, SUCCEEDED seen, served; the queued/claimed/finished stamps come from the Deployment
message, written by the deployer's wall clock on this same machine) and the intervals
between them; CPU ms per cycle of chat, builder, deployer, PostgreSQL (the backends of the
bench database only), Redis and this client, how busy each service's event-loop thread was,
and how busy the machine was, with the share no measured process accounts for (other work
on a shared box); then the target, cycle p50 <= 500 ms with every cycle served, PASS or
MISS. A failed cycle is counted, not timed, and logged with the step it was in and what
GetDeployment says about its deployment; `--workdir DIR` keeps the services' logs.

`--poll-interval` sets APPFORGE_DEPLOY_POLL_INTERVAL (default 1 s, the service's default):
how long an idle deploy worker sleeps unless a Deploy in its own process wakes it. The
"queued -> claimed" line shows whether the wake-up works (a few ms) or a worker slept.

The bench creates a database of its own (`appforge_bench_<random>`) and drops it at the end,
starts and stops its own processes (killing them by pid on error), and waits for readiness
on the gRPC health service with a bound.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/cycle.py                        # 50 builds + 50 deploys, under a minute
    python bench/cycle.py --builds 200 --json    # more builds, machine-readable output
    python bench/cycle.py --concurrency 4        # 4 cycles in flight
    python bench/cycle.py --check                # exit status 3 when the target is missed

The exit status is 1 when the bench cannot measure and, with `--check`, 3 when the target
is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
from harness import (
    CALL_TIMEOUT_S,
    CHANNEL_OPTIONS,
    MIGRATE_TIMEOUT_S,
    BenchError,
    Child,
    PySpy,
    _proc_cpu_s,
    appforge_command,
    bench_database,
    free_port,
    in_workdir,
    log,
    machine_ticks,
    percentile,
    py_spy_command,
    run_and_report,
    run_command,
    running,
)

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.api.flow.v1 import flow_pb2

TARGET_P50_MS = 500.0
CYCLE_TIMEOUT_S = 60.0  # one cycle, Build to served
SERVE_TIMEOUT_S = 10.0  # SUCCEEDED seen, and the URL still not serving: the cycle failed
GET_RETRY_S = 0.005
SERVICES = ("chat", "builder", "deployer")

SUCCEEDED = deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
TERMINAL = frozenset(
    {
        deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED,
        deployer_pb2.DEPLOYMENT_STATUS_FAILED,
        deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT,
        deployer_pb2.DEPLOYMENT_STATUS_CANCELLED,
    }
)

# (label, from event, to event): the phases each kind of cycle reports. "call" is 0 ms.
CYCLE_PHASES = (
    ("Build -> finished event", "call", "finished"),
    ("finished -> SUCCEEDED seen", "finished", "seen"),
    ("SUCCEEDED -> served", "seen", "served"),
)
BASELINE_PHASES = (
    ("Deploy call", "call", "replied"),
    ("reply -> SUCCEEDED seen", "replied", "seen"),
    ("SUCCEEDED -> served", "seen", "served"),
)
# Events in the order they usually happen, and what the timeline calls them.
TIMELINE = (
    ("started", "started event (builder)"),
    ("replied", "Deploy reply (baseline)"),
    ("queued", "deployment queued"),
    ("claimed", "attempt claimed"),
    ("published", "attempt finished (published)"),
    ("finished", "finished event (builder)"),
    ("seen", "SUCCEEDED seen (watch)"),
    ("served", "served (GET 200)"),
)
# Intervals worth naming, where both events exist.
INTERVALS = (
    ("builder before Deploy", "call", "queued"),
    ("claim wait (queued -> claimed)", "queued", "claimed"),
    ("attempt (claimed -> finished)", "claimed", "published"),
    ("builder after Deploy (queued -> finished)", "queued", "finished"),
    ("attempt finished -> SUCCEEDED seen", "published", "seen"),
)


# --- configuration and results ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    builds: int
    concurrency: int
    warmup: int
    prompt: str
    poll_interval: float
    workers: int
    log_level: str
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
    py_spy_service: str
    target_p50_ms: float
    workdir: Path | None


@dataclass(kw_only=True)
class Sample:
    """One cycle: ms after the call of each event it got to, or the error that ended it."""

    events: dict[str, float] = field(default_factory=dict)
    error: str = ""
    items: int = 0
    get_tries: int = 0
    app_version_id: str = ""
    # Where the cycle is, and what it made: named when a cycle fails.
    stage: str = "CreateApp"
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and "served" in self.events


@dataclass(frozen=True, kw_only=True)
class Stat:
    """Percentiles of one duration, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 0.50),
            p95_ms=percentile(ordered, 0.95),
            max_ms=ordered[-1] if ordered else 0.0,
            mean_ms=sum(ordered) / len(ordered) if ordered else 0.0,
        )


def _between(samples: Sequence[Sample], start: str, end: str) -> Stat:
    return Stat.of(
        [
            s.events[end] - s.events.get(start, 0.0)
            for s in samples
            if end in s.events and (start == "call" or start in s.events)
        ]
    )


# --- one cycle ----------------------------------------------------------------------------


class CycleError(Exception):
    """A cycle that did not end with the calculator served."""


@dataclass(frozen=True, kw_only=True)
class Clients:
    """The stubs and the HTTP session every cycle shares (one channel per service)."""

    chat: chat_pb2_grpc.ChatServiceStub
    builder: builder_pb2_grpc.BuilderServiceStub
    deployer: deployer_pb2_grpc.DeployerServiceStub
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
        return (stamp.ToMicroseconds() - self.wall_us) / 1000


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


# --- CPU ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by each service (and its main thread), by the PostgreSQL
    backends of the bench database (by pid), by every redis-server process and by this
    client; the machine's CPU ticks by kind."""

    processes: dict[str, float]
    loops: dict[str, float]
    backends: dict[int, float]
    redis: dict[int, float]
    machine: list[int]
    wall_s: float


BACKENDS_SQL = """
SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


def _stat_cpu_s(path: str) -> float:
    found = _proc_cpu_s(Path(path))
    return found[1] if found else 0.0


async def cpu_sample(pids: dict[str, int | None], conn: asyncpg.Connection) -> CpuSample:
    """CPU used so far. PostgreSQL: only the backends serving the bench database (the
    server may be shared); a backend that exits before the second sample is not counted."""
    backends = [int(row["pid"]) for row in await conn.fetch(BACKENDS_SQL)]
    redis: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _proc_cpu_s(stat)
        if found is not None and found[0] == "redis-server":
            redis[int(stat.parent.name)] = found[1]
    processes = {name: _stat_cpu_s(f"/proc/{pid}/stat") for name, pid in pids.items() if pid}
    processes["client"] = time.process_time()
    loops = {name: _stat_cpu_s(f"/proc/{pid}/task/{pid}/stat") for name, pid in pids.items() if pid}
    return CpuSample(
        processes=processes,
        loops=loops,
        backends={pid: _stat_cpu_s(f"/proc/{pid}/stat") for pid in backends},
        redis=redis,
        machine=machine_ticks(),
        wall_s=time.perf_counter(),
    )


def cpu_usage(before: CpuSample, after: CpuSample, cycles: int) -> dict[str, Any]:
    """CPU ms per cycle of each process, event-loop busy shares, the machine's CPU shares
    (`other`: busy time none of the measured processes account for: other work on the box)."""
    wall_s = max(1e-6, after.wall_s - before.wall_s)
    used = {
        name: after.processes[name] - before.processes.get(name, 0.0) for name in after.processes
    }
    used["postgres"] = sum(
        cpu - before.backends.get(pid, 0.0) for pid, cpu in after.backends.items()
    )
    # Every redis-server process that ran through the phase (the server may be shared).
    used["redis"] = sum(
        cpu - before.redis[pid] for pid, cpu in after.redis.items() if pid in before.redis
    )
    ticks = [b - a for a, b in zip(before.machine, after.machine, strict=True)]
    total = max(1, sum(ticks))
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    busy = (user + nice + system + irq + softirq) / total
    ours = sum(used.values()) / (wall_s * (os.cpu_count() or 1))
    n = max(1, cycles)
    return {
        "ms_per_cycle": {name: seconds * 1000 / n for name, seconds in used.items()},
        "pg_backends": len(after.backends),
        "loop_busy": {
            name: (after.loops[name] - before.loops.get(name, 0.0)) / wall_s for name in after.loops
        },
        "machine": {
            "busy": busy,
            "other": max(0.0, busy - ours),
            "iowait": iowait / total,
            "steal": steal / total,
            "idle": idle / total,
        },
    }


# --- phases -------------------------------------------------------------------------------


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


def summarise(
    phase: PhaseResult, phases: Sequence[tuple[str, str, str]], total_from: str = "call"
) -> dict[str, Any]:
    ok = [s for s in phase.samples if s.ok]
    errors = Counter(s.error for s in phase.samples if not s.ok)
    return {
        "cycles": len(phase.samples),
        "served": len(ok),
        "errors": dict(errors.most_common(5)),
        "wall_s": phase.wall_s,
        "cycles_per_s": len(ok) / phase.wall_s if phase.wall_s else 0.0,
        "total": dataclasses.asdict(_between(ok, total_from, "served")),
        "phases": {label: dataclasses.asdict(_between(ok, a, b)) for label, a, b in phases},
        "timeline": {
            name: dataclasses.asdict(_between(ok, "call", name))
            for name, _ in TIMELINE
            if any(name in s.events for s in ok)
        },
        "intervals": {
            label: dataclasses.asdict(_between(ok, a, b))
            for label, a, b in INTERVALS
            if any(b in s.events and (a == "call" or a in s.events) for s in ok)
        },
        "flow_items": Stat.of([s.items for s in ok]).p50_ms,
        "get_tries": dict(Counter(s.get_tries for s in ok)),
        "cpu": phase.cpu,
        "samples_ms": [round(s.events["served"], 2) for s in ok],
    }


# --- the run ------------------------------------------------------------------------------


def _serve_child(name: str, port: int, env: dict[str, str], workdir: Path, *extra: str) -> Child:
    argv = [*appforge_command(), "serve", name, "--host", "127.0.0.1", "--port", str(port)]
    return Child(name, [*argv, *extra], env, workdir / f"{name}.log")


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
        "APPFORGE_LOG_LEVEL": config.log_level,
    }
    await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
    children = {
        "chat": _serve_child("chat", ports["chat"], env, workdir),
        "deployer": _serve_child(
            "deployer", ports["deployer"], env, workdir, "--http-port", str(ports["http"])
        ),
        "builder": _serve_child("builder", ports["builder"], env, workdir),
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


def report(
    config: BenchConfig, files: Sequence[flow_pb2.File], cycle: PhaseResult, baseline: PhaseResult
) -> dict[str, Any]:
    """The results as plain data (what `--json` prints)."""
    built = summarise(cycle, CYCLE_PHASES)
    deployed = summarise(baseline, BASELINE_PHASES)
    c, b = built["total"], deployed["total"]
    every_served = built["served"] == built["cycles"] and built["cycles"] > 0
    return {
        "config": {
            "builds": config.builds,
            "concurrency": config.concurrency,
            "warmup": config.warmup,
            "prompt": config.prompt,
            "model": "scripted",
            "poll_interval_s": config.poll_interval,
            "deploy_workers": config.workers,
            "log_level": config.log_level,
            "files": {f.path: len(f.content) for f in files},
            "cpus": os.cpu_count(),
        },
        "cycle": built,
        "baseline": deployed,
        "ratio": {
            "p50": c["p50_ms"] / b["p50_ms"] if b["p50_ms"] else 0.0,
            "p95": c["p95_ms"] / b["p95_ms"] if b["p95_ms"] else 0.0,
            "build_adds_p50_ms": c["p50_ms"] - b["p50_ms"],
            "build_share_p50": 1 - b["p50_ms"] / c["p50_ms"] if c["p50_ms"] else 0.0,
        },
        "target": {
            "p50_ms": config.target_p50_ms,
            "value_ms": c["p50_ms"],
            "every_cycle_served": every_served,
            "pass": every_served and c["p50_ms"] <= config.target_p50_ms,
        },
    }


# --- the report ---------------------------------------------------------------------------


def _row(label: str, stat: dict[str, Any], width: int = 44) -> str:
    return (
        f"  {label:{width}}{stat['p50_ms']:9.1f}{stat['p95_ms']:9.1f}{stat['max_ms']:9.1f}"
        f"{stat['count']:6d}"
    )


def _cell(stat: dict[str, Any] | None) -> str:
    return f"{stat['p50_ms']:9.1f} / {stat['p95_ms']:<8.1f}" if stat else f"{'-':>9}{'':11}"


def _timeline_rows(result: dict[str, Any]) -> list[str]:
    cycle, base = result["cycle"], result["baseline"]
    head = f"{'cycle':>9}{'':11}{'baseline':>9}{'':11}"
    lines = [f"  {'timeline, ms after the call: p50 / p95':44}{head}"]
    for name, label in TIMELINE:
        lines.append(
            f"  {label:44}{_cell(cycle['timeline'].get(name))}{_cell(base['timeline'].get(name))}"
        )
    lines.append("")
    lines.append(f"  {'intervals, ms: p50 / p95':44}{head}")
    for label, _, _ in INTERVALS:
        lines.append(
            f"  {label:44}{_cell(cycle['intervals'].get(label))}"
            f"{_cell(base['intervals'].get(label))}"
        )
    return lines


def _cpu_rows(result: dict[str, Any]) -> list[str]:
    names = ["chat", "builder", "deployer", "postgres", "redis", "client"]
    lines = [
        f"  {'CPU ms per cycle':17}" + "".join(f"{n:>10}" for n in names) + "   loop busy c/b/d"
    ]
    machine = []
    for kind in ("cycle", "baseline"):
        cpu = result[kind]["cpu"]
        cells = "".join(f"{cpu['ms_per_cycle'].get(n, 0.0):10.1f}" for n in names)
        busy = " / ".join(f"{100 * cpu['loop_busy'].get(n, 0.0):.0f}%" for n in SERVICES)
        m = cpu["machine"]
        lines.append(f"  {kind:17}{cells}   {busy}")
        machine.append(
            f"  machine, {kind}: {100 * m['busy']:.0f}% busy "
            f"({100 * m['other']:.0f}% not these processes), "
            f"{100 * m['iowait']:.0f}% iowait, {100 * m['steal']:.0f}% steal, "
            f"{cpu['pg_backends']} PostgreSQL connections"
        )
    lines += machine
    lines.append(
        "  (postgres: the backends of the bench database; redis: all redis-server processes;\n"
        "  loop busy: the CPU share of each service's main thread, where its event loop runs)"
    )
    return lines


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = result["config"]
    files = ", ".join(f"{path} {size:,} B" for path, size in cfg["files"].items())
    lines = [
        f"cycle: {cfg['builds']} builds of {cfg['prompt']!r} ({cfg['model']} model), "
        f"{cfg['concurrency']} at a time after {cfg['warmup']} warm-up; deploy poll "
        f"{cfg['poll_interval_s']:g}s, {cfg['deploy_workers']} workers; {cfg['cpus']} CPUs",
        f"files: {files}",
        "",
        f"  {'':44}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'n':>6}",
    ]
    for kind, title in (("cycle", "Build -> served"), ("baseline", "Deploy -> served")):
        part = result[kind]
        lines.append(_row(f"{title} ({kind})", part["total"]))
        lines += [_row(f"  {label}", stat) for label, stat in part["phases"].items()]
        extra = f"{part['served']}/{part['cycles']} served, {part['cycles_per_s']:.1f} cycles/s"
        lines.append(f"  {'':4}{extra}; GETs per cycle {part['get_tries']}")
        lines += [f"  {'':4}{n} x {error}" for error, n in part["errors"].items()]
    r = result["ratio"]
    lines += [
        "",
        f"  ratio cycle / baseline: p50 {r['p50']:.2f}, p95 {r['p95']:.2f}; the build adds "
        f"{r['build_adds_p50_ms']:.0f} ms at p50 ({100 * r['build_share_p50']:.0f}% of the cycle)",
        f"  flow items per build (p50): {result['cycle']['flow_items']:.0f}",
        "",
        *_timeline_rows(result),
        "",
        *_cpu_rows(result),
        "",
    ]
    t = result["target"]
    verdict = "PASS" if t["pass"] else "MISS"
    served = "every cycle served" if t["every_cycle_served"] else "NOT every cycle served"
    lines.append(
        f"target: cycle p50 <= {t['p50_ms']:.0f} ms: p50 {t['value_ms']:.1f} ms, {served}"
        f"  ->  {verdict}"
    )
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark Build -> calculator served, against the deploy leg alone.",
    )
    parser.add_argument("--builds", type=int, default=50, help="measured cycles of each kind")
    parser.add_argument("--concurrency", type=int, default=1, help="cycles in flight")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured cycles of each kind")
    parser.add_argument("--prompt", default="build a calculator")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="APPFORGE_DEPLOY_POLL_INTERVAL (s)"
    )
    parser.add_argument("--workers", type=int, default=4, help="APPFORGE_DEPLOY_WORKERS")
    parser.add_argument("--log-level", default="WARNING", help="APPFORGE_LOG_LEVEL")
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="asyncpg DSN of a database to run CREATE/DROP DATABASE from",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument("--check", action="store_true", help="exit 3 when the target is missed")
    parser.add_argument(
        "--target-p50-ms", type=float, default=TARGET_P50_MS, help="the cycle's p50 target"
    )
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="profile a service during the build cycles"
    )
    parser.add_argument("--py-spy-service", choices=SERVICES, default="builder")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep data, deploys and service logs here"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.builds, args.concurrency, args.workers) < 1 or args.warmup < 0:
        print("--builds, --concurrency, --workers >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if not (args.poll_interval > 0 and math.isfinite(args.poll_interval)):
        print("--poll-interval must be a positive number of seconds", file=sys.stderr)
        return 2
    if args.py_spy is not None and py_spy_command() is None:
        print("--py-spy needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    config = BenchConfig(
        builds=args.builds,
        concurrency=args.concurrency,
        warmup=args.warmup,
        prompt=args.prompt,
        poll_interval=args.poll_interval,
        workers=args.workers,
        log_level=args.log_level,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        py_spy=args.py_spy,
        py_spy_service=args.py_spy_service,
        target_p50_ms=args.target_p50_ms,
        workdir=args.workdir,
    )
    result = run_and_report(
        in_workdir("cycle-bench-", lambda workdir: run_bench(config, workdir), keep=config.workdir),
        as_json=args.json,
        render=render_table,
        py_spy=config.py_spy,
    )
    if isinstance(result, int):
        return result
    return 3 if args.check and not result["target"]["pass"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
