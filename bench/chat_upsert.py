"""Benchmark: chat `UpsertAssistantMessage` against the ceiling of its own stack.

What is measured, in one run, with the same client and the same load:

1. **service** - the real chat service, `appforge serve chat`, as a separate OS process on
   PostgreSQL (asyncpg) and Redis, after `appforge migrate`. The bench creates its apps
   through `CreateApp`, posts one user message to each, then drives
   `UpsertAssistantMessage`.
2. **ceiling** - a bare `grpc.aio` server (this script with `--ceiling-server`, also a
   separate OS process) serving the same RPC with a handler that runs exactly one raw
   asyncpg upsert (`INSERT ... ON CONFLICT (execution_id, seq) DO UPDATE`) and returns a
   small `ChatMessage`. Its pool has as many connections as the service's engine can open
   (10 + 10 overflow). It is what gRPC + asyncpg + PostgreSQL cost on this machine when
   the handler does the least a durable write can do.

The load: `--calls` upserts spread over `--executions` executions, `--concurrency` calls in
flight. Calls of one execution are sent in order, one at a time, like a real executor
would: the first creates the message with a tools item (a pending call), the next adds a
text item, the next moves the call to SUCCEEDED, later ones grow a second text item, the
last completes the message; about `--replay-ratio` of the calls replay the call before.
At most 4 x concurrency executions are open at once, so steps of every kind interleave
throughout the run. Both servers first get `--warmup` calls on executions of their own.

Printed: calls/s, p50 and p99 latency (ms), errors and CPU ms per call (server process,
PostgreSQL backends, bench client) for both, the throughput ratio service/ceiling, and the
targets (ratio >= 0.6, service p99 <= 30 ms) with PASS/MISS.

The bench creates a database of its own (`appforge_bench_<random>`) and drops it at the
end, starts and stops its own processes (killing them on error), and waits for readiness
on the gRPC health service with a bound.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/chat_upsert.py                     # the default run, about a minute
    python bench/chat_upsert.py --calls 4000 --json # fewer calls, machine-readable output
    python bench/chat_upsert.py --py-spy /tmp/chat.txt   # also profile the service

`--check` makes the exit status 3 when a target is missed (for CI).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import secrets
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
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
    percentile,
    py_spy_command,
    run_and_report,
    run_command,
    running,
)

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.flow.v1 import flow_pb2

TARGET_RATIO = 0.6
TARGET_P99_MS = 30.0

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
# What the service's engine may open (services/common/db.py: pool_size=10, max_overflow=10).
CEILING_POOL_SIZE = 20
OPEN_EXECUTIONS_PER_WORKER = 4
TEXT_CHUNK = "The form now validates the e-mail field before it posts to /api/signup. "

CEILING_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS bench_ceiling (
    execution_id text NOT NULL,
    seq bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (execution_id, seq)
)
"""
CEILING_UPSERT = """
INSERT INTO bench_ceiling (execution_id, seq, body) VALUES ($1, $2, $3)
ON CONFLICT (execution_id, seq) DO UPDATE SET body = EXCLUDED.body
"""

Request: TypeAlias = chat_pb2.UpsertAssistantMessageRequest
Script: TypeAlias = "list[Request]"
UpsertCall: TypeAlias = "Callable[[Request], Awaitable[chat_pb2.ChatMessage]]"


# --- configuration and results ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    calls: int
    executions: int
    concurrency: int
    warmup: int
    apps: int
    replay_ratio: float
    seed: int
    admin_dsn: str
    redis_url: str
    py_spy: Path | None


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by the server, the PostgreSQL processes and this process."""

    server_s: float
    postgres_s: float
    client_s: float


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """What the client saw while driving one server."""

    calls: int
    ok: int
    errors: dict[str, int]
    first_error: str
    elapsed_s: float
    latencies_s: list[float]


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One server's numbers, as printed."""

    name: str
    calls: int
    errors: int
    error_codes: dict[str, int]
    first_error: str
    elapsed_s: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_ms_per_call: float | None
    postgres_cpu_ms_per_call: float | None
    client_cpu_ms_per_call: float


def measure(name: str, load: LoadResult, before: CpuSample, after: CpuSample) -> Measurement:
    """Summarise one load run and the CPU it cost."""
    latencies = sorted(load.latencies_s)
    calls = max(load.ok, 1)
    server_known = before.server_s >= 0 and after.server_s >= 0
    server_s = after.server_s - before.server_s
    postgres_s = after.postgres_s - before.postgres_s
    return Measurement(
        name=name,
        calls=load.calls,
        errors=load.calls - load.ok,
        error_codes=load.errors,
        first_error=load.first_error,
        elapsed_s=load.elapsed_s,
        calls_per_s=load.ok / load.elapsed_s if load.elapsed_s > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] * 1000) if latencies else 0.0,
        server_cpu_ms_per_call=server_s * 1000 / calls if server_known else None,
        postgres_cpu_ms_per_call=postgres_s * 1000 / calls if postgres_s > 0 else None,
        client_cpu_ms_per_call=(after.client_s - before.client_s) * 1000 / calls,
    )


# --- the load -----------------------------------------------------------------------------


def _tools_item(seq: int, call_id: str, status: int, result_json: str = "") -> flow_pb2.FlowItem:
    call = flow_pb2.ToolCall(
        call_id=call_id,
        name="read_file",
        status=status,  # type: ignore[arg-type]
        arguments_json='{"path": "src/pages/signup.tsx"}',
        result_json=result_json,
    )
    return flow_pb2.FlowItem(seq=seq, tools=flow_pb2.ToolBatch(calls=[call]))


def _text_item(seq: int, text: str) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, message=flow_pb2.TextPart(text=text))


def step_request(app_id: str, execution_id: str, step: int, *, final: bool) -> Request:
    """The `step`-th upsert an executor sends for one execution.

    0 creates the message with a pending tool call, 1 adds a text item, 2 moves the call
    to SUCCEEDED, 3 and later grow a second text item; `final` completes the message.
    """
    request = chat_pb2.UpsertAssistantMessageRequest(app_id=app_id, execution_id=execution_id)
    if step == 0:
        request.items.append(_tools_item(1, "call-1", flow_pb2.TOOL_STATUS_PENDING))
        request.status = chat_pb2.MESSAGE_STATUS_PROCESSING
        request.metadata.update({"model": "bench", "attempt": 1})
    elif step == 1:
        request.items.append(_text_item(2, "Let me look at the signup page first."))
    elif step == 2:
        result = json.dumps({"content": "export function Signup() { ... }", "bytes": 1834})
        request.items.append(
            _tools_item(1, "call-1", flow_pb2.TOOL_STATUS_SUCCEEDED, result_json=result)
        )
    else:
        request.items.append(_text_item(3, TEXT_CHUNK * (step - 2)))
    if final:
        request.status = chat_pb2.MESSAGE_STATUS_COMPLETED
    return request


def execution_script(
    app_id: str, execution_id: str, calls: int, rng: random.Random, replay_ratio: float
) -> Script:
    """The `calls` requests of one execution, in the order they are sent."""
    script: Script = []
    step = 0
    while len(script) < calls:
        if script and rng.random() < replay_ratio:
            script.append(script[-1])  # a replay: the executor resends its last call
            continue
        final = len(script) == calls - 1
        script.append(step_request(app_id, execution_id, step, final=final))
        step += 1
    return script


def build_scripts(
    app_ids: Sequence[str],
    *,
    prefix: str,
    calls: int,
    executions: int,
    replay_ratio: float,
    seed: int,
) -> list[Script]:
    """`calls` requests spread as evenly as possible over `executions` executions."""
    rng = random.Random(seed)
    executions = max(1, min(executions, calls))
    per, extra = divmod(calls, executions)
    return [
        execution_script(
            app_ids[n % len(app_ids)],
            f"{prefix}-{n:06d}",
            per + (1 if n < extra else 0),
            rng,
            replay_ratio,
        )
        for n in range(executions)
    ]


async def drive(upsert: UpsertCall, scripts: Sequence[Script], concurrency: int) -> LoadResult:
    """Send every script's requests with `concurrency` calls in flight.

    An execution's calls go one at a time, in order. Executions open in index order and
    at most `OPEN_EXECUTIONS_PER_WORKER * concurrency` are open at once; a worker takes the
    least recently served open execution, so calls of many executions interleave.
    """
    window = OPEN_EXECUTIONS_PER_WORKER * concurrency
    ready: deque[tuple[int, int]] = deque()  # (execution, position of its next call)
    opened = 0
    in_flight = 0
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    first_error = ""

    def take() -> tuple[int, int] | None:
        nonlocal opened
        while opened < len(scripts) and len(ready) + in_flight < window:
            ready.append((opened, 0))
            opened += 1
        return ready.popleft() if ready else None

    async def worker() -> None:
        nonlocal in_flight, first_error
        while (job := take()) is not None:
            execution, position = job
            in_flight += 1
            started = time.perf_counter()
            try:
                await upsert(scripts[execution][position])
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                first_error = first_error or f"{exc.code().name}: {exc.details()}"
            finally:
                in_flight -= 1
            if position + 1 < len(scripts[execution]):
                ready.append((execution, position + 1))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    total = sum(len(s) for s in scripts)
    return LoadResult(
        calls=total,
        ok=len(latencies),
        errors=dict(errors),
        first_error=first_error,
        elapsed_s=elapsed,
        latencies_s=latencies,
    )


# --- processes, CPU accounting and readiness ----------------------------------------------


def cpu_sample(server_pid: int | None) -> CpuSample:
    """CPU used so far; server and PostgreSQL are -1 where /proc does not tell."""
    server = _proc_cpu_s(Path(f"/proc/{server_pid}/stat")) if server_pid else None
    postgres = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _proc_cpu_s(stat)
        if found is not None and found[0] == "postgres":
            postgres += found[1]
    return CpuSample(
        server_s=server[1] if server else -1.0,
        postgres_s=postgres,
        client_s=time.process_time(),
    )


# --- database -----------------------------------------------------------------------------


# --- the ceiling server -------------------------------------------------------------------


async def serve_ceiling(port: int, dsn: str, pool_size: int) -> None:
    """A bare grpc.aio server: one raw asyncpg upsert per UpsertAssistantMessage."""
    pool = await asyncpg.create_pool(
        dsn, min_size=pool_size, max_size=pool_size, reset=_keep_session_state
    )

    async def upsert(request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        seq = request.items[0].seq if request.items else 0
        await pool.execute(CEILING_UPSERT, request.execution_id, seq, request.SerializeToString())
        return chat_pb2.ChatMessage(
            id=request.execution_id,
            app_id=request.app_id,
            role=chat_pb2.ROLE_ASSISTANT,
            execution_id=request.execution_id,
            status=request.status,
            version=seq,
        )

    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "UpsertAssistantMessage": grpc.unary_unary_rpc_method_handler(
                upsert,
                request_deserializer=chat_pb2.UpsertAssistantMessageRequest.FromString,
                response_serializer=chat_pb2.ChatMessage.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot bind 127.0.0.1:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    try:
        await stop.wait()
        await server.stop(1.0)
    finally:
        await pool.close()


async def _keep_session_state(connection: asyncpg.Connection) -> None:
    """Skip the pool's reset query: one upsert leaves no session state to clear, and the
    reset would add a second round trip to every call of a server meant as a ceiling."""


# --- py-spy (optional) --------------------------------------------------------------------


# --- orchestration ------------------------------------------------------------------------


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
) -> tuple[Measurement, list[str]]:
    """Warm up, then measure one server; the app ids used (created when none are given)."""
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
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


async def run_bench(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """The whole run: database, migrations, both servers, one after the other."""
    async with bench_database(config.admin_dsn) as dsn:
        env = {
            **os.environ,
            "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "REDIS_URL": config.redis_url,
        }
        await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(CEILING_TABLE_DDL)
        finally:
            await conn.close()

        port = free_port()
        service = Child(
            "service",
            [*appforge_command(), "serve", "chat", "--host", "127.0.0.1", "--port", str(port)],
            env,
            workdir / "service.log",
        )
        async with running(service, f"127.0.0.1:{port}"):
            log(f"service serving on 127.0.0.1:{port} (pid {service.pid})")
            svc, app_ids = await drive_server(
                "service", f"127.0.0.1:{port}", service, None, config, profile=config.py_spy
            )

        port = free_port()
        ceiling = Child(
            "ceiling",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--ceiling-server",
                *("--port", str(port), "--dsn", dsn, "--pool-size", str(CEILING_POOL_SIZE)),
            ],
            dict(os.environ),
            workdir / "ceiling.log",
        )
        async with running(ceiling, f"127.0.0.1:{port}"):
            log(f"ceiling serving on 127.0.0.1:{port} (pid {ceiling.pid})")
            ceil, _ = await drive_server("ceiling", f"127.0.0.1:{port}", ceiling, app_ids, config)
    return report(config, svc, ceil)


def report(config: BenchConfig, service: Measurement, ceiling: Measurement) -> dict[str, Any]:
    """The results as plain data (what `--json` prints)."""
    ratio = service.calls_per_s / ceiling.calls_per_s if ceiling.calls_per_s else 0.0
    return {
        "config": {
            "calls": config.calls,
            "executions": config.executions,
            "concurrency": config.concurrency,
            "warmup": config.warmup,
            "apps": config.apps,
            "replay_ratio": config.replay_ratio,
            "seed": config.seed,
            "cpus": os.cpu_count(),
            "ceiling_pool_size": CEILING_POOL_SIZE,
        },
        "service": dataclasses.asdict(service),
        "ceiling": dataclasses.asdict(ceiling),
        "ratio": ratio,
        "targets": {
            "ratio": {"target": TARGET_RATIO, "value": ratio, "pass": ratio >= TARGET_RATIO},
            "service_p99_ms": {
                "target": TARGET_P99_MS,
                "value": service.p99_ms,
                "pass": service.p99_ms <= TARGET_P99_MS and service.errors == 0,
            },
        },
    }


def _cpu(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = result["config"]
    lines = [
        f"chat UpsertAssistantMessage: {cfg['calls']:,} calls over {cfg['executions']:,} "
        f"executions, {cfg['concurrency']} in flight, {cfg['apps']} app(s), "
        f"{cfg['cpus']} CPUs",
        "",
        f"{'':24}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
        f"   CPU ms/call: server / postgres / client",
    ]
    for key, label in (("service", "service (appforge)"), ("ceiling", "ceiling (raw asyncpg)")):
        m = result[key]
        lines.append(
            f"{label:24}{m['calls_per_s']:9.0f}{m['p50_ms']:9.1f}{m['p99_ms']:9.1f}"
            f"{m['max_ms']:9.1f}{m['errors']:8d}   {_cpu(m['server_cpu_ms_per_call'])} / "
            f"{_cpu(m['postgres_cpu_ms_per_call'])} / {_cpu(m['client_cpu_ms_per_call'])}"
        )
        if m["errors"]:
            lines.append(f"{'':24}errors {m['error_codes']}, first: {m['first_error']}")
    lines.append(f"{'ratio service/ceiling':24}{result['ratio']:9.2f}  (throughput)")
    lines.append(
        f"ceiling: one INSERT ... ON CONFLICT per call, asyncpg pool of "
        f"{cfg['ceiling_pool_size']} connections (the most the service's engine opens)"
    )
    lines.append("")
    lines.append("targets")
    for key, label, fmt in (
        ("ratio", f"throughput ratio >= {TARGET_RATIO}", "{:.2f}"),
        ("service_p99_ms", f"service p99 <= {TARGET_P99_MS:g} ms", "{:.1f} ms"),
    ):
        target = result["targets"][key]
        verdict = "PASS" if target["pass"] else "MISS"
        lines.append(f"  {label:28}{fmt.format(target['value']):>10}  {verdict}")
    needed = cfg["concurrency"] / (TARGET_P99_MS / 1000)
    lines.append(
        f"  (closed loop: mean latency = in flight / throughput, so p99 <= {TARGET_P99_MS:g} ms "
        f"with {cfg['concurrency']} in flight needs more than {needed:,.0f} calls/s)"
    )
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark chat UpsertAssistantMessage against a bare grpc.aio + asyncpg "
        "ceiling.",
    )
    parser.add_argument("--calls", type=int, default=8_000, help="measured calls per server")
    parser.add_argument("--executions", type=int, default=2_000, help="executions to spread over")
    parser.add_argument("--concurrency", type=int, default=50, help="calls in flight")
    parser.add_argument("--warmup", type=int, default=800, help="unmeasured calls first")
    parser.add_argument("--apps", type=int, default=1, help="apps the executions belong to")
    parser.add_argument("--replay-ratio", type=float, default=0.1, help="share of replayed calls")
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
    parser.add_argument("--check", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="profile the service with py-spy into FILE"
    )
    server = parser.add_argument_group("internal: the ceiling server process")
    server.add_argument("--ceiling-server", action="store_true", help=argparse.SUPPRESS)
    server.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    server.add_argument("--dsn", default="", help=argparse.SUPPRESS)
    server.add_argument("--pool-size", type=int, default=CEILING_POOL_SIZE, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.ceiling_server:
        asyncio.run(serve_ceiling(args.port, args.dsn, args.pool_size))
        return 0
    if args.calls < 1 or args.executions < 1 or args.concurrency < 1 or args.apps < 1:
        print("--calls, --executions, --concurrency and --apps must be positive", file=sys.stderr)
        return 2
    if args.py_spy is not None and py_spy_command() is None:
        print("--py-spy needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    config = BenchConfig(
        calls=args.calls,
        executions=args.executions,
        concurrency=args.concurrency,
        warmup=max(0, args.warmup),
        apps=args.apps,
        replay_ratio=args.replay_ratio,
        seed=args.seed,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        py_spy=args.py_spy,
    )
    result = run_and_report(
        in_workdir("chat-bench-", lambda workdir: run_bench(config, workdir)),
        as_json=args.json,
        render=render_table,
        py_spy=config.py_spy,
    )
    if isinstance(result, int):
        return result
    missed = not all(t["pass"] for t in result["targets"].values())
    return 3 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
