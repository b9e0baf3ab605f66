"""The run, wired: a bench database, the endpoint, chat, the deployer and the builder, one
app per build, the watchers; then the builds, the measured stream, the builds' ends, the
watchers' records and the report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from builder_bench.cpu import server_pids
from builder_bench.run import create_apps
from builder_bench.watchers import WatcherPool, merge_watchers
from harness import CHANNEL_OPTIONS, BenchError, bench_database, log

from appforge.api.builder.v1 import builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2_grpc

from .builds import BuildTally, start_builds
from .config import StreamConfig
from .endpoint import TokenEndpoint
from .report import report
from .services import start_services
from .window import Processes, measure_stream, wait_arrived

END_TIMEOUT_S = 90.0  # for the builds to finish (completion, deploy) once released


async def _end_builds(builds: list[asyncio.Task[None]], tally: BuildTally) -> None:
    """Wait for every Build stream to finish; cancel (and count) those that do not."""
    _, pending = await asyncio.wait(builds, timeout=END_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*builds, return_exceptions=True)
    if pending:
        tally.error(f"TIMEOUT: {len(pending)} Build streams not finished {END_TIMEOUT_S:.0f}s on")


async def run_bench(config: StreamConfig, workdir: Path, watch_script: Path) -> dict[str, Any]:
    """The whole run; the results as plain data. `watch_script` is the entry point the
    watcher processes run (with `--watch-child`)."""
    async with bench_database(config.admin_dsn) as dsn, contextlib.AsyncExitStack() as stack:
        endpoint = await stack.enter_async_context(TokenEndpoint(config).serving())
        children, addresses = await start_services(config, dsn, workdir, endpoint.base_url, stack)
        log(", ".join(f"{name} pid {child.pid}" for name, child in children.items()))
        chat_channel, builder_channel = [
            await stack.enter_async_context(
                grpc.aio.insecure_channel(addresses[name], options=CHANNEL_OPTIONS)
            )
            for name in ("chat", "builder")
        ]
        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)

        apps = await create_apps(chat_pb2_grpc.ChatServiceStub(chat_channel), config.builds)
        assignment = [apps[w % len(apps)] for w in range(config.watchers)]
        logs = config.logs or workdir
        pool = WatcherPool(watch_script, addresses["chat"], assignment, config.watcher_procs, logs)
        stack.push_async_callback(pool.stop)
        await pool.start()
        log(f"{config.watchers} watchers on {len(apps)} apps ready (pids {pool.pids})")
        processes = Processes(
            children=children,
            watchers=pool,
            servers=await server_pids(conn, config.redis_url),
            database=dsn.rpartition("/")[2],
        )

        tally = BuildTally()
        builder = builder_pb2_grpc.BuilderServiceStub(builder_channel)
        builds = start_builds(builder, apps, tally, config)
        try:
            await wait_arrived(endpoint, tally, processes)
            window = await measure_stream(config, endpoint, tally, processes)
            log("streamed; letting the builds finish")
            ended = time.monotonic()
            await _end_builds(builds, tally)
            log(f"builds finished in {time.monotonic() - ended:.1f}s")
        finally:
            for task in builds:
                task.cancel()
            await asyncio.gather(*builds, return_exceptions=True)
        log("collecting the watchers' records")
        per_process = await pool.report([("stream", window.start_us, window.end_us)])
    if not window.emitted:
        raise BenchError("the endpoint emitted no token")
    watched = merge_watchers([windows[0] for windows in per_process])
    extra = {key: sum(windows[0][key] for windows in per_process) for key in ("gaps", "foreign")}
    extra["last_arrival_us"] = max(windows[0]["last_arrival_us"] for windows in per_process)
    return report(config, apps, window, tally, {**watched, **extra})
