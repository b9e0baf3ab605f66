"""One procrastinate configuration of `noop` mode: a fresh database with procrastinate's
schema, `processes` worker processes (`procrastinate_app`), the defers, the wait for every
job, then the numbers, on the same PostgreSQL as the deployers.

The counterpart of `phase`: the same job count (`--deployments`), the same defers in flight
(`--concurrency`), the same job slots per process (`--workers`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
from harness import BenchError, Child, bench_database, log

from .config import BenchConfig
from .cpu import cpu_sample
from .procrastinate_app import make_app
from .procrastinate_load import defer_jobs
from .procrastinate_results import QueueResult, summarise_queue
from .procrastinate_tables import job_rows, jobs_per_worker, wait_ended, wait_registered

BENCH_DIR = Path(__file__).resolve().parent.parent  # on the workers' PYTHONPATH


def worker_child(name: str, dsn: str, config: BenchConfig, workdir: Path) -> Child:
    """A procrastinate worker process: `--workers` job slots, polling as configured."""
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR)}
    return Child(
        name,
        [
            *(sys.executable, "-m", "deployer_bench.procrastinate_app"),
            *("--dsn", dsn, "--concurrency", str(config.workers)),
            *("--poll-interval", str(config.procrastinate_poll_interval)),
        ],
        env,
        workdir / f"{name}.log",
    )


@contextlib.asynccontextmanager
async def running_workers(
    children: Sequence[Child], conn: asyncpg.Connection
) -> AsyncIterator[None]:
    """The worker processes started and registered, stopped (SIGTERM, then SIGKILL) on the
    way out whatever happens."""
    try:
        for child in children:
            await child.start()
        await wait_registered(conn, children)
        yield
    except BaseException:
        for child in children:
            log(f"--- last lines of {child.name}'s log ({child.log}) ---\n{child.log_tail()}")
        raise
    finally:
        for child in children:
            status = await child.stop()
            log(f"{child.name} stopped (exit status {status})")


async def run_queue_phase(processes: int, config: BenchConfig, workdir: Path) -> QueueResult:
    """One configuration: fresh database and schema, `processes` workers, the defers."""
    tag = f"procrastinate-{processes}p"
    async with bench_database(config.admin_dsn) as dsn, contextlib.AsyncExitStack() as stack:
        app = make_app(dsn, config.concurrency)
        await stack.enter_async_context(app.open_async())
        await app.schema_manager.apply_schema_async()
        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)

        children = [worker_child(f"{tag}-{n}", dsn, config, workdir) for n in range(processes)]
        await stack.enter_async_context(running_workers(children, conn))
        pids = [child.pid for child in children]
        log(f"{tag}: worker pids {pids}")

        before = cpu_sample(pids, None)
        try:
            sent = await defer_jobs(app, count=config.deployments, concurrency=config.concurrency)
            log(
                f"{tag}: {len(sent.version_ids)} defers in {sent.elapsed_s:.1f}s, "
                f"{sum(sent.errors.values())} errors"
            )
            if not sent.version_ids:
                raise BenchError(f"{tag}: no defer succeeded ({sent.first_error})")
            await wait_ended(conn, len(sent.version_ids), children)
        finally:
            after = cpu_sample(pids, None)
        per_process = await jobs_per_worker(conn)  # before the workers unregister
        rows = await job_rows(conn)
        log(f"{tag}: every job ended")
    return summarise_queue(processes, sent, rows, per_process, before, after)
