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

The bench's modules are in `chat_upsert_bench/` (one per concept, see its `__init__`); this
script reads the command line and runs them, or, with `--ceiling-server`, is the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from chat_upsert_bench.ceiling import CEILING_POOL_SIZE, serve_ceiling
from chat_upsert_bench.config import BenchConfig
from chat_upsert_bench.report import render_table
from chat_upsert_bench.run import run_bench
from harness import (
    add_output_options,
    add_server_options,
    in_workdir,
    py_spy_command,
    run_and_report,
)


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
        "--auth",
        action="store_true",
        help="the service checks tokens (HS256) and every call carries a service token; the "
        "ceiling is sent the same metadata and checks nothing",
    )
    add_server_options(parser)
    add_output_options(parser)
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
        auth=args.auth,
    )
    script = Path(__file__).resolve()
    result = run_and_report(
        in_workdir("chat-bench-", lambda workdir: run_bench(config, workdir, script)),
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
