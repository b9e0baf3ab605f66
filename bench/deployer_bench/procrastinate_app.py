"""The procrastinate side of `noop` mode: its app (a PsycopgConnector on the bench's own
database) with one no-op task, and the worker child entry point.

The bench's client defers through `make_app(...)`; each worker is a separate OS process,

    python -m deployer_bench.procrastinate_app --dsn DSN --concurrency N --poll-interval S

(run with `bench/` on PYTHONPATH), which runs `App.run_worker_async` with LISTEN/NOTIFY on
(procrastinate's default) until SIGTERM. The task does nothing, so what is measured is
procrastinate's queue: defer, notify, fetch, the recorded success.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import procrastinate

NOOP_TASK = "bench_noop"


def make_app(dsn: str, pool_size: int) -> procrastinate.App:
    """An app on `dsn` (a libpq URI) with a pool of `pool_size` connections and the no-op
    task registered as `NOOP_TASK`."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=pool_size, max_size=pool_size
        )
    )

    @app.task(name=NOOP_TASK)
    async def bench_noop() -> None:
        """Does nothing: the job's cost is the queue's alone."""

    return app


def worker_pool_size(concurrency: int) -> int:
    """A worker's pool: one connection per job slot (fetch, then the recorded end) plus
    two for its heartbeat and abort polling, so no slot waits for a connection. The
    LISTEN connection is separate (procrastinate opens it outside the pool)."""
    return concurrency + 2


async def run_worker(dsn: str, concurrency: int, poll_interval: float) -> None:
    """One worker process: `concurrency` job slots, LISTEN/NOTIFY on, fetch polling every
    `poll_interval` seconds; stops on SIGTERM (procrastinate's own signal handlers)."""
    app = make_app(dsn, worker_pool_size(concurrency))
    async with app.open_async():
        await app.run_worker_async(
            concurrency=concurrency,
            fetch_job_polling_interval=poll_interval,
            listen_notify=True,
            install_signal_handlers=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A procrastinate worker of the deployer bench.")
    parser.add_argument("--dsn", required=True, help="libpq URI of the bench's database")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--poll-interval", type=float, required=True, help="seconds")
    args = parser.parse_args(argv)
    asyncio.run(run_worker(args.dsn, args.concurrency, args.poll_interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
