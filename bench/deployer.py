"""Benchmark: the deployer's durable queue, with one and with two deployer processes.

What is measured, in one run, twice: first with ONE `appforge serve deployer` process, then
with TWO sharing the same database and the same deploy root. Each configuration gets a fresh
database (`appforge migrate`), a fresh deploy root and its own `appforge serve chat` (the
deployer delivers each deployment's end to chat, so notices are part of the work), all as
separate OS processes on PostgreSQL (asyncpg) and Redis.

The load: `--deployments` `DeployerService.Deploy` calls, `--concurrency` in flight, spread
round-robin over the deployer processes' gRPC ports (replicas behind a load balancer). Every
call deploys the same `--files`-file static app (an `index.html` that names its version,
scripts, styles, SVGs and a manifest, 1-4 KiB each) to the `local` target for one app made
through chat's `CreateApp`, each with its own `app_version_id` and `execution_id`. The
deployers start claiming while the calls are still coming in: `--workers` worker tasks per
process, polling every `--poll-interval` seconds and woken at once by a Deploy in their own
process.

Printed for each configuration:

- enqueue: Deploy calls/s, from the first call sent to the last reply;
- deployments/s: succeeded deployments over the time from the first Deploy call sent to the
  last deployment's `finished_us` (the database is polled directly with asyncpg to know when
  every deployment has ended);
- claim latency: a deployment's `created_us` to its first attempt's `started_us`
  (`deploy_attempts.number = 1`), p50/p95/p99/max. While Deploy calls arrive faster than the
  workers publish, this is mostly the wait in the queue;
- attempt time: an attempt's `started_us` to `finished_us` (claim to recorded success);
- end to end: `created_us` to the deployment's `finished_us`;
- CPU: ms per deployment of the deployer processes, chat, all PostgreSQL processes and this
  client; the CPU share of each deployer's main thread, where its asyncio event loop runs
  (100%: the loop is saturated); and the machine's busy, iowait and steal shares (on a
  shared VM, steal says how much of the run was lost to neighbours);
- correctness: every deployment SUCCEEDED with exactly one attempt; the app's
  `versions/` directory holds exactly the deployed versions, each once, each with every file
  and the `index.html` of its own version; no staging directory left behind; every
  deployment's notice acknowledged by chat (waited for with a bound after the last
  success). Also shown: how many deliveries the outbox recorded (`tries`, one per notice when
  nothing is delivered twice) and how long after the last deployment ended the last notice
  was acknowledged.

Then the ratio two processes / one process of deployments/s. On a 2-core machine the two
deployers, chat, PostgreSQL and this client share the same cores; the CPU columns say who
pays.

The bench creates a database of its own per configuration (`appforge_bench_<random>`) and
drops it at the end, starts and stops its own processes (killing them by pid on error), and
waits for readiness on the gRPC health service with a bound.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/deployer.py                          # 1,000 deployments x 2, ~1.5 minutes
    python bench/deployer.py --deployments 300 --json # smaller, machine-readable output
    python bench/deployer.py --py-spy /tmp/deployer.txt   # also profile the single deployer

The exit status is 1 when the bench cannot measure and 3 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.api.flow.v1 import flow_pb2

STALL_TIMEOUT_S = 60.0  # no deployment ended for this long: the bench gives up
NOTICE_TIMEOUT_S = 60.0
POLL_S = 0.05  # how often the bench reads the deployments' statuses

SUCCEEDED = deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED
TERMINAL = (
    deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED,
    deployer_pb2.DEPLOYMENT_STATUS_FAILED,
    deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT,
    deployer_pb2.DEPLOYMENT_STATUS_CANCELLED,
)

PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE status = ANY($2::smallint[])) AS ended,
       count(*) FILTER (WHERE status = $3) AS succeeded
FROM deploy_deployments WHERE app_id = $1
"""
DEPLOYMENTS_SQL = """
SELECT d.app_version_id, d.status, d.error, d.created_us, d.finished_us,
       (SELECT count(*) FROM deploy_attempts n WHERE n.deployment_id = d.id) AS attempts,
       a.started_us, a.finished_us AS attempt_finished_us, a.worker_id
FROM deploy_deployments d
LEFT JOIN deploy_attempts a ON a.deployment_id = d.id AND a.number = 1
WHERE d.app_id = $1
"""
NOTICES_SQL = """
SELECT count(*) FILTER (WHERE o.delivered_us IS NOT NULL) AS delivered,
       count(*) AS queued,
       coalesce(sum(o.tries), 0) AS tries,
       max(o.delivered_us) AS last_delivered_us,
       max(o.last_error) AS some_error
FROM deploy_outbox o WHERE o.app_id = $1
"""


# --- configuration and results ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    deployments: int
    files: int
    workers: int
    concurrency: int
    poll_interval: float
    seed: int
    admin_dsn: str
    redis_url: str
    py_spy: Path | None


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Percentiles of one duration, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_us: Sequence[int]) -> Latency:
        ordered = sorted(values_us)
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 0.50) / 1000,
            p95_ms=percentile(ordered, 0.95) / 1000,
            p99_ms=percentile(ordered, 0.99) / 1000,
            max_ms=(ordered[-1] / 1000) if ordered else 0.0,
        )


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by the deployers (and their event-loop threads), chat,
    PostgreSQL and this process; the machine's CPU time by kind, in clock ticks."""

    deployers_s: float
    loops_s: list[float]
    chat_s: float
    postgres_s: float
    client_s: float
    machine: list[int]
    wall_s: float


@dataclass(frozen=True, kw_only=True)
class Checks:
    """What must hold after a configuration's run; `problems` empty when all of it does."""

    succeeded: int
    one_attempt: int
    version_dirs: int
    versions_complete: int
    staging_left: int
    notices_delivered: int
    notice_tries: int
    notice_lag_s: float  # the last notice acknowledged, after the last deployment ended
    problems: list[str]


@dataclass(frozen=True, kw_only=True)
class PhaseResult:
    """One configuration's numbers, as printed."""

    processes: int
    deployments: int
    enqueue_errors: dict[str, int]
    first_enqueue_error: str
    enqueue_s: float
    enqueue_per_s: float
    elapsed_s: float
    deployments_per_s: float
    claim: Latency
    attempt: Latency
    end_to_end: Latency
    claims_per_process: list[int]
    cpu_ms_per_deployment: dict[str, float]
    loop_busy: list[float]
    machine_cpu: dict[str, float]
    checks: Checks


# --- the artifact and the load ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """The files every deployment carries; only `index.html` differs, naming its version."""

    shared: list[flow_pb2.File]
    index_template: str

    def files(self, version_id: str) -> list[flow_pb2.File]:
        index = self.index_template.replace("@VERSION@", version_id)
        return [flow_pb2.File(path="index.html", content=index.encode()), *self.shared]

    @property
    def paths(self) -> set[str]:
        return {"index.html", *(f.path for f in self.shared)}


def _filler(rng: random.Random, size: int, line: str) -> str:
    words = "const form validate email signup button state render props value".split()
    out: list[str] = []
    length = 0
    while length < size:
        text = line.format(word=rng.choice(words), n=rng.randrange(10_000))
        out.append(text)
        length += len(text) + 1
    return "\n".join(out)[:size]


def build_artifact(files: int, rng: random.Random) -> Artifact:
    """A static app of `files` files, 1-4 KiB each: index.html, scripts, styles, SVGs."""
    kinds = [
        ("assets/app-{i}.js", "export const {word}{n} = () => {word}({n});"),
        ("assets/style-{i}.css", ".{word}-{n} {{ margin: {n}px; color: #{n}; }}"),
        ("assets/icon-{i}.svg", '<path d="M{n} {n}L{n} {n}" id="{word}"/>'),
        ("assets/data-{i}.json", '{{"{word}": {n}}},'),
    ]
    shared = []
    for i in range(files - 1):
        pattern, line = kinds[i % len(kinds)]
        path = "manifest.webmanifest" if i == files - 2 and files > 2 else pattern.format(i=i)
        content = _filler(rng, rng.randint(1024, 4096), line)
        shared.append(flow_pb2.File(path=path, content=content.encode()))
    scripts = "".join(
        f'<script type="module" src="/{f.path}"></script>' for f in shared if f.path.endswith(".js")
    )
    head = '<!doctype html><html><head><meta charset="utf-8"><title>@VERSION@</title>'
    body = "</head><body><div id=root data-version=@VERSION@></div>"
    padding = f"<!-- {_filler(rng, rng.randint(1024, 3072), '{word} {n}')} -->"
    return Artifact(shared=shared, index_template=head + scripts + body + padding + "</body>")


@dataclass(frozen=True, kw_only=True)
class EnqueueResult:
    """What the client saw while sending the Deploy calls."""

    version_ids: list[str]
    errors: dict[str, int]
    first_error: str
    started_us: int
    elapsed_s: float


async def enqueue(
    stubs: Sequence[Any],
    app_id: str,
    artifact: Artifact,
    *,
    count: int,
    concurrency: int,
    prefix: str,
) -> EnqueueResult:
    """Send `count` Deploy calls, `concurrency` in flight, round-robin over `stubs`."""
    next_n = 0
    done: list[str] = []
    errors: Counter[str] = Counter()
    first_error = ""

    async def sender() -> None:
        nonlocal next_n, first_error
        while next_n < count:
            n = next_n
            next_n += 1
            version_id = f"{prefix}-v{n:06d}"
            request = deployer_pb2.DeployRequest(
                app_id=app_id,
                app_version_id=version_id,
                execution_id=f"{prefix}-e{n:06d}",
                files=artifact.files(version_id),
                target=deployer_pb2.DEPLOY_TARGET_LOCAL,
            )
            try:
                await stubs[n % len(stubs)].Deploy(request, timeout=CALL_TIMEOUT_S)
                done.append(version_id)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                first_error = first_error or f"{exc.code().name}: {exc.details()}"

    started_us = time.time_ns() // 1000
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return EnqueueResult(
        version_ids=done,
        errors=dict(errors),
        first_error=first_error,
        started_us=started_us,
        elapsed_s=time.perf_counter() - started,
    )


async def wait_ended(
    conn: asyncpg.Connection, app_id: str, expected: int, children: Sequence[Child]
) -> int:
    """Poll until `expected` deployments ended; how many succeeded. Fails on a stall or
    when a deployer exits."""
    last_ended, last_change = -1, time.monotonic()
    while True:
        for child in children:
            if child.proc is not None and child.proc.returncode is not None:
                raise BenchError(f"{child.name} exited with {child.proc.returncode}")
        row = await conn.fetchrow(PROGRESS_SQL, app_id, list(TERMINAL), SUCCEEDED)
        assert row is not None
        ended, succeeded = int(row["ended"]), int(row["succeeded"])
        if ended >= expected:
            return succeeded
        if ended != last_ended:
            last_ended, last_change = ended, time.monotonic()
        elif time.monotonic() - last_change > STALL_TIMEOUT_S:
            raise BenchError(
                f"stalled: {ended}/{expected} deployments ended, none in {STALL_TIMEOUT_S:.0f}s"
            )
        await asyncio.sleep(POLL_S)


# --- processes, CPU accounting and readiness ----------------------------------------------


def _pid_cpu_s(pid: int | None) -> float:
    found = _proc_cpu_s(Path(f"/proc/{pid}/stat")) if pid else None
    return found[1] if found else 0.0


def _loop_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process's main thread: where its asyncio event loop runs."""
    found = _proc_cpu_s(Path(f"/proc/{pid}/task/{pid}/stat")) if pid else None
    return found[1] if found else 0.0


def cpu_sample(deployer_pids: Sequence[int | None], chat_pid: int | None) -> CpuSample:
    """CPU used so far; PostgreSQL is the sum over every process named `postgres`."""
    postgres = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _proc_cpu_s(stat)
        if found is not None and found[0] == "postgres":
            postgres += found[1]
    return CpuSample(
        deployers_s=sum(_pid_cpu_s(pid) for pid in deployer_pids),
        loops_s=[_loop_cpu_s(pid) for pid in deployer_pids],
        chat_s=_pid_cpu_s(chat_pid),
        postgres_s=postgres,
        client_s=time.process_time(),
        machine=machine_ticks(),
        wall_s=time.perf_counter(),
    )


def machine_cpu(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Shares of all the machine's CPU time between two samples: busy, iowait, steal, idle."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        b - a for a, b in zip(before.machine, after.machine, strict=True)
    )
    total = max(1, user + nice + system + idle + iowait + irq + softirq + steal)
    return {
        "busy": (user + nice + system + irq + softirq) / total,
        "iowait": iowait / total,
        "steal": steal / total,
        "idle": idle / total,
    }


# --- database -----------------------------------------------------------------------------


# --- py-spy (optional) --------------------------------------------------------------------


# --- checks -------------------------------------------------------------------------------


def check_root(
    root: Path, app_id: str, version_ids: Sequence[str], artifact: Artifact
) -> dict[str, Any]:
    """The version directories as they are on disk, against the versions deployed."""
    versions = root / "apps" / app_id / "versions"
    listed = sorted(os.listdir(versions)) if versions.is_dir() else []
    expected = set(version_ids)
    complete = 0
    for version_id in expected.intersection(listed):
        base = versions / version_id
        found = {
            str((Path(d) / f).relative_to(base)) for d, _, names in os.walk(base) for f in names
        }
        index = base / "index.html"
        if found == artifact.paths and f"data-version={version_id}>" in index.read_text():
            complete += 1
    staging = root / ".staging"
    return {
        "listed": len(listed),
        "unique": len(set(listed)),
        "missing": len(expected.difference(listed)),
        "extra": len(set(listed).difference(expected)),
        "complete": complete,
        "staging_left": len(os.listdir(staging)) if staging.is_dir() else 0,
    }


@dataclass(frozen=True, kw_only=True)
class Notices:
    """The outbox once every notice was acknowledged, or the wait for it gave up."""

    delivered: int
    tries: int  # delivery attempts recorded, failed ones and repeated deliveries included
    last_delivered_us: int
    error: str


async def wait_notices(conn: asyncpg.Connection, app_id: str, expected: int) -> Notices:
    """Wait (bounded) until chat acknowledged `expected` notices."""
    deadline = time.monotonic() + NOTICE_TIMEOUT_S
    while True:
        row = await conn.fetchrow(NOTICES_SQL, app_id)
        assert row is not None
        delivered = int(row["delivered"])
        if delivered >= expected or time.monotonic() > deadline:
            return Notices(
                delivered=delivered,
                tries=int(row["tries"]),
                last_delivered_us=int(row["last_delivered_us"] or 0),
                error=str(row["some_error"] or ""),
            )
        await asyncio.sleep(POLL_S)


def build_checks(
    rows: Sequence[asyncpg.Record],
    expected: Sequence[str],
    disk: dict[str, Any],
    notices: Notices,
) -> Checks:
    problems: list[str] = []
    last_finished_us = max((r["finished_us"] or 0 for r in rows), default=0)
    succeeded = sum(1 for r in rows if r["status"] == SUCCEEDED)
    one_attempt = sum(1 for r in rows if r["attempts"] == 1)
    n = len(expected)
    if len(rows) != n:
        problems.append(f"{len(rows)} deployment rows for {n} Deploy calls")
    if succeeded != n:
        statuses = Counter(deployer_pb2.DeploymentStatus.Name(r["status"]) for r in rows)
        errors = [r["error"] for r in rows if r["status"] != SUCCEEDED][:1]
        problems.append(f"{succeeded}/{n} SUCCEEDED ({dict(statuses)}; first error {errors})")
    if one_attempt != n:
        problems.append(f"{n - one_attempt} deployments took more than one attempt")
    if disk["listed"] != n or disk["missing"] or disk["extra"]:
        problems.append(
            f"versions/: {disk['listed']} directories for {n} versions "
            f"({disk['missing']} missing, {disk['extra']} unexpected)"
        )
    if disk["complete"] != n:
        problems.append(f"{n - disk['complete']} version directories incomplete or wrong")
    if disk["staging_left"]:
        problems.append(f"{disk['staging_left']} staging directories left behind")
    if notices.delivered != n:
        problems.append(
            f"{notices.delivered}/{n} notices acknowledged by chat (an error: {notices.error!r})"
        )
    return Checks(
        succeeded=succeeded,
        one_attempt=one_attempt,
        version_dirs=disk["listed"],
        versions_complete=disk["complete"],
        staging_left=disk["staging_left"],
        notices_delivered=notices.delivered,
        notice_tries=notices.tries,
        notice_lag_s=(notices.last_delivered_us - last_finished_us) / 1e6,
        problems=problems,
    )


# --- one configuration --------------------------------------------------------------------


async def create_app(chat_address: str, token: str) -> str:
    async with grpc.aio.insecure_channel(chat_address, options=CHANNEL_OPTIONS) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        app = await stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="bench", name=f"deploy-bench-{token}"),
            timeout=CALL_TIMEOUT_S,
        )
        return str(app.id)


def deployer_child(
    name: str, ports: tuple[int, int], env: dict[str, str], workdir: Path
) -> tuple[Child, str]:
    """A deployer process on (gRPC port, HTTP port), and its gRPC address."""
    port, http_port = ports
    child = Child(
        name,
        [
            *appforge_command(),
            *("serve", "deployer", "--host", "127.0.0.1"),
            *("--port", str(port), "--http-port", str(http_port)),
        ],
        env,
        workdir / f"{name}.log",
    )
    return child, f"127.0.0.1:{port}"


async def run_phase(
    processes: int, config: BenchConfig, artifact: Artifact, workdir: Path
) -> PhaseResult:
    """One configuration: fresh database and root, chat, `processes` deployers, the load."""
    tag = f"{processes}p"
    root = workdir / f"root-{tag}"
    root.mkdir()
    async with bench_database(config.admin_dsn) as dsn, contextlib.AsyncExitStack() as stack:
        env = {
            **os.environ,
            "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "REDIS_URL": config.redis_url,
            "APPFORGE_DEPLOY_ROOT": str(root),
            "APPFORGE_DEPLOY_POLL_INTERVAL": str(config.poll_interval),
            "APPFORGE_DEPLOY_WORKERS": str(config.workers),
            "APPFORGE_LOG_LEVEL": "WARNING",
        }
        await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
        chat_port = free_port()
        chat = Child(
            f"chat-{tag}",
            [*appforge_command(), "serve", "chat", "--host", "127.0.0.1", "--port", str(chat_port)],
            env,
            workdir / f"chat-{tag}.log",
        )
        await stack.enter_async_context(running(chat, f"127.0.0.1:{chat_port}"))
        app_id = await create_app(f"127.0.0.1:{chat_port}", secrets.token_hex(3))

        ports = [(free_port(), free_port()) for _ in range(processes)]
        env = {
            **env,
            "APPFORGE_CHAT_ADDR": f"127.0.0.1:{chat_port}",
            # Every deployer serves the shared root; the URL names the first one's.
            "APPFORGE_DEPLOY_PUBLIC_URL": f"http://127.0.0.1:{ports[0][1]}",
        }
        children = [
            deployer_child(f"deployer-{tag}-{n}", ports[n], env, workdir) for n in range(processes)
        ]
        for child, address in children:
            await stack.enter_async_context(running(child, address))
        pids = [child.pid for child, _ in children]
        log(f"{tag}: chat pid {chat.pid}, deployer pids {pids}, app {app_id}")

        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)
        channels = [
            await stack.enter_async_context(
                grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            )
            for _, address in children
        ]
        stubs = [deployer_pb2_grpc.DeployerServiceStub(channel) for channel in channels]

        spy = None
        if config.py_spy is not None and processes == 1 and pids[0] is not None:
            spy = PySpy(config.py_spy, pids[0])
            await spy.start()
        before = cpu_sample(pids, chat.pid)
        started = time.perf_counter()
        try:
            sent = await enqueue(
                stubs,
                app_id,
                artifact,
                count=config.deployments,
                concurrency=config.concurrency,
                prefix=tag,
            )
            log(
                f"{tag}: {len(sent.version_ids)} Deploy calls in {sent.elapsed_s:.1f}s, "
                f"{sum(sent.errors.values())} errors"
            )
            if not sent.version_ids:
                raise BenchError(f"{tag}: no Deploy call succeeded ({sent.first_error})")
            await wait_ended(conn, app_id, len(sent.version_ids), [c for c, _ in children])
            wall_s = time.perf_counter() - started
        finally:
            after = cpu_sample(pids, chat.pid)
            if spy is not None:
                await spy.stop()
        log(f"{tag}: every deployment ended after {wall_s:.1f}s")

        notices = await wait_notices(conn, app_id, len(sent.version_ids))
        rows = await conn.fetch(DEPLOYMENTS_SQL, app_id)
        disk = await asyncio.to_thread(check_root, root, app_id, sent.version_ids, artifact)
    checks = build_checks(rows, sent.version_ids, disk, notices)
    return summarise_phase(processes, pids, sent, rows, before, after, checks)


def summarise_phase(
    processes: int,
    pids: Sequence[int | None],
    sent: EnqueueResult,
    rows: Sequence[asyncpg.Record],
    before: CpuSample,
    after: CpuSample,
    checks: Checks,
) -> PhaseResult:
    ok = [r for r in rows if r["status"] == SUCCEEDED]
    last_us = max((r["finished_us"] for r in ok), default=sent.started_us)
    elapsed_s = max(1e-6, (last_us - sent.started_us) / 1e6)
    claimed = [r for r in rows if r["started_us"] is not None]
    per_pid = Counter(str(r["worker_id"]).split(":")[1] for r in claimed)
    n = max(1, len(ok))
    cpu = {
        "deployers": (after.deployers_s - before.deployers_s) * 1000 / n,
        "chat": (after.chat_s - before.chat_s) * 1000 / n,
        "postgres": (after.postgres_s - before.postgres_s) * 1000 / n,
        "client": (after.client_s - before.client_s) * 1000 / n,
    }
    wall_s = max(1e-6, after.wall_s - before.wall_s)
    return PhaseResult(
        processes=processes,
        deployments=len(sent.version_ids),
        enqueue_errors=sent.errors,
        first_enqueue_error=sent.first_error,
        enqueue_s=sent.elapsed_s,
        enqueue_per_s=len(sent.version_ids) / sent.elapsed_s if sent.elapsed_s else 0.0,
        elapsed_s=elapsed_s,
        deployments_per_s=len(ok) / elapsed_s,
        claim=Latency.of([r["started_us"] - r["created_us"] for r in claimed]),
        attempt=Latency.of(
            [
                r["attempt_finished_us"] - r["started_us"]
                for r in claimed
                if r["attempt_finished_us"] is not None
            ]
        ),
        end_to_end=Latency.of([r["finished_us"] - r["created_us"] for r in ok]),
        claims_per_process=[per_pid.get(str(pid), 0) for pid in pids],
        cpu_ms_per_deployment=cpu,
        loop_busy=[(b - a) / wall_s for a, b in zip(before.loops_s, after.loops_s, strict=True)],
        machine_cpu=machine_cpu(before, after),
        checks=checks,
    )


# --- the run and its report ---------------------------------------------------------------


async def run_bench(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """Both configurations, one after the other, with the same artifact and load."""
    artifact = build_artifact(config.files, random.Random(config.seed))
    one = await run_phase(1, config, artifact, workdir)
    two = await run_phase(2, config, artifact, workdir)
    return report(config, artifact, one, two)


def report(
    config: BenchConfig, artifact: Artifact, one: PhaseResult, two: PhaseResult
) -> dict[str, Any]:
    """The results as plain data (what `--json` prints)."""
    sizes = [len(artifact.files("x")[0].content), *(len(f.content) for f in artifact.shared)]
    return {
        "config": {
            "deployments": config.deployments,
            "files": config.files,
            "artifact_bytes": sum(sizes),
            "workers_per_process": config.workers,
            "concurrency": config.concurrency,
            "poll_interval_s": config.poll_interval,
            "seed": config.seed,
            "cpus": os.cpu_count(),
        },
        "one_process": dataclasses.asdict(one),
        "two_processes": dataclasses.asdict(two),
        "ratio": two.deployments_per_s / one.deployments_per_s if one.deployments_per_s else 0.0,
        "correct": not one.checks.problems and not two.checks.problems,
    }


def _pct(values: Sequence[float]) -> str:
    return " / ".join(f"{100 * v:.0f}%" for v in values)


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = result["config"]
    phases = [("1 deployer", result["one_process"]), ("2 deployers", result["two_processes"])]
    lines = [
        f"deployer: {cfg['deployments']:,} deployments of a {cfg['files']}-file app "
        f"({cfg['artifact_bytes'] / 1024:.0f} KiB) to the local target,",
        f"{cfg['workers_per_process']} workers per deployer process, {cfg['concurrency']} "
        f"Deploy calls in flight, poll {cfg['poll_interval_s']:g}s, {cfg['cpus']} CPUs",
        "",
        f"{'':13}{'enqueue/s':>10}{'deploys/s':>10}{'elapsed s':>10}"
        f"   claim latency ms: p50 / p95 / p99 / max",
    ]
    for label, p in phases:
        c = p["claim"]
        lines.append(
            f"{label:13}{p['enqueue_per_s']:10.1f}{p['deployments_per_s']:10.1f}"
            f"{p['elapsed_s']:10.1f}   {c['p50_ms']:.0f} / {c['p95_ms']:.0f} / "
            f"{c['p99_ms']:.0f} / {c['max_ms']:.0f}"
        )
    lines.append(f"{'ratio 2/1':13}{'':10}{result['ratio']:10.2f}   (deployments/s)")
    lines.append("")
    lines.append(f"{'':13}{'attempt ms p50 / p99':>22}{'end-to-end ms p50 / p99':>26}")
    for label, p in phases:
        a, e = p["attempt"], p["end_to_end"]
        lines.append(
            f"{label:13}{a['p50_ms']:13.0f} / {a['p99_ms']:<6.0f}"
            f"{e['p50_ms']:17.0f} / {e['p99_ms']:<6.0f}"
        )
    lines.append("")
    lines.append(
        f"{'':13}{'CPU ms/deployment: deployers / chat / pg / client':>49}"
        f"{'loop busy':>12}   machine busy / iowait / steal"
    )
    for label, p in phases:
        cpu, m = p["cpu_ms_per_deployment"], p["machine_cpu"]
        shares = f"{cpu['deployers']:.1f} / {cpu['chat']:.1f} / {cpu['postgres']:.1f} / "
        shares += f"{cpu['client']:.1f}"
        lines.append(
            f"{label:13}{shares:>49}{_pct(p['loop_busy']):>12}   "
            f"{_pct([m['busy'], m['iowait'], m['steal']]):>29}"
        )
    lines.append("")
    lines.append("correctness")
    for label, p in phases:
        k = p["checks"]
        n = p["deployments"]
        verdict = "OK" if not k["problems"] else "FAIL"
        claims = " / ".join(str(c) for c in p["claims_per_process"])
        lines.append(
            f"  {label:12}{verdict:5}{k['succeeded']}/{n} SUCCEEDED, {k['one_attempt']}/{n} "
            f"with one attempt, {k['version_dirs']} version dirs ({k['versions_complete']} "
            f"complete),"
        )
        lines.append(
            f"{'':19}{k['staging_left']} staging dirs left, claims per process {claims}, "
            f"{k['notices_delivered']}/{n} notices acked by chat"
        )
        lines.append(
            f"{'':19}({k['notice_tries']} deliveries, the last "
            f"{k['notice_lag_s']:.1f}s after the last deployment ended)"
        )
        lines += [f"{'':19}{problem}" for problem in k["problems"]]
        if p["enqueue_errors"]:
            lines.append(f"{'':19}Deploy errors {p['enqueue_errors']}: {p['first_enqueue_error']}")
    lines.append("")
    lines.append(
        "claim latency: created_us -> first attempt's started_us. Deploy calls arrive faster\n"
        "than the workers publish, so it is mostly the wait in the queue. loop busy: the CPU\n"
        "share of each deployer's main thread (100% = its asyncio event loop is saturated)."
    )
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark the deployer's queue with one and with two deployer processes.",
    )
    parser.add_argument("--deployments", type=int, default=1_000, help="per configuration")
    parser.add_argument("--files", type=int, default=20, help="files per deployment")
    parser.add_argument("--workers", type=int, default=4, help="worker tasks per deployer")
    parser.add_argument("--concurrency", type=int, default=16, help="Deploy calls in flight")
    parser.add_argument(
        "--poll-interval", type=float, default=0.05, help="APPFORGE_DEPLOY_POLL_INTERVAL (s)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="asyncpg DSN of a database to run CREATE/DROP DATABASE from",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="profile the single deployer into FILE"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.deployments, args.workers, args.concurrency) < 1 or args.files < 2:
        print("--deployments, --workers, --concurrency >= 1 and --files >= 2", file=sys.stderr)
        return 2
    if args.py_spy is not None and py_spy_command() is None:
        print("--py-spy needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    config = BenchConfig(
        deployments=args.deployments,
        files=args.files,
        workers=args.workers,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        seed=args.seed,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        py_spy=args.py_spy,
    )
    result = run_and_report(
        in_workdir("deployer-bench-", lambda workdir: run_bench(config, workdir)),
        as_json=args.json,
        render=render_table,
        py_spy=config.py_spy,
    )
    if isinstance(result, int):
        return result
    return 0 if result["correct"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
