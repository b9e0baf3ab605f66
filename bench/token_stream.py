"""Benchmark: tokens streamed by the model, through the builder and chat, to WatchApp watchers.

Issue 10's token streaming bench. `--builds` (32) builds run at once, one app each, with
the builder's `openai` model pointed at a fake OpenAI-compatible endpoint that this script
serves on loopback. A build's first turn writes index.html; its second is the reply,
streamed one token per SSE chunk at `--tokens-per-s` (50), `--tokens` (500) tokens. Each
token is a 4-character word that encodes when the endpoint emitted it (wall clock, 100 µs
units, base 36), so whoever reads it knows its latency. The builder coalesces the tokens
(APPFORGE_STREAM_FLUSH_MS, `--flush-ms`, 50) into appends to chat; chat fans each one out to
`--watchers` (100) BASIC WatchApp streams, spread evenly over the apps, in `--watcher-procs`
processes (this script with `--watch-child`). For every (watcher, token) the watcher records
when the token's last character arrived minus its emission.

The replies start together once every build has asked for one, and their ends are held until
every token has reached the bench's Build streams: the measured window holds the token stream
and nothing else (no build start-up, no completion or deploy).

Printed: tokens emitted and emitted/s; tokens delivered to at least one watcher and their
rate; token emitted -> watcher latency p50/p90/p99/p99.9/max over every (watcher, token)
pair, for the first and the last watcher of each token, and to the bench's Build streams;
(watcher, token) pairs missing; CPU ms per token emitted of chat, the builder, the deployer,
PostgreSQL (the bench database's share), Redis, the watchers and this process (the endpoint
and the Build streams), and the rest of the machine; the targets, PASS or MISS: p99 <= 100
ms, and every token emitted and received by every watcher of its app.

Against the real services as separate OS processes: `appforge migrate`, `appforge serve
chat`, `deployer` (local target) and `builder`, on PostgreSQL and Redis, in a database of its
own (`appforge_bench_<random>`, dropped at the end); readiness through the gRPC health
service, with a bound.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/token_stream.py                 # the default run, about 20 s
    python bench/token_stream.py --quick         # 2 builds, 4 watchers, 50 tokens: a smoke test
    python bench/token_stream.py --json --check  # machine-readable; exit 3 on a MISS
    python bench/token_stream.py --py-spy /tmp/p # also profile chat and the builder

The exit status is 1 when the bench cannot measure and, with `--check`, 3 when a target is
missed.

The bench's modules are in `token_stream_bench/` (one per concept, see its `__init__`); it
shares `harness` with the other benches and reuses `builder_bench`'s watcher pool, latency
histograms, pacer and CPU accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import (
    add_output_options,
    add_server_options,
    add_service_options,
    run_services_bench,
)
from token_stream_bench.config import QUICK, StreamConfig
from token_stream_bench.report import missed, render_table
from token_stream_bench.run import run_bench
from token_stream_bench.watchers import watch_child


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark streamed tokens from the model to WatchApp watchers.",
    )
    parser.add_argument("--builds", type=int, default=32, help="builds at once, one app each")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per build's reply")
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="per build")
    parser.add_argument("--watchers", type=int, default=100, help="WatchApp streams")
    parser.add_argument("--watcher-procs", type=int, default=1, help="processes for the watchers")
    parser.add_argument(
        "--flush-ms", type=float, default=50.0, help="the builder's APPFORGE_STREAM_FLUSH_MS"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: "
        + ", ".join(f"--{k} {v}" for k, v in QUICK.items())
        + " (unless given)",
    )
    add_server_options(parser)
    add_output_options(parser)
    add_service_options(parser, profiled="during the stream")
    child = parser.add_argument_group("internal: a watcher process")
    child.add_argument("--watch-child", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--chat", default="", help=argparse.SUPPRESS)
    child.add_argument("--watch-apps", default="", help=argparse.SUPPRESS)
    child.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; with `--quick`, its defaults are the smoke test's."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.watch_child:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch_child(args.chat, args.watch_apps.split(","), args.first))
        return 0
    if min(args.builds, args.tokens, args.watchers, args.watcher_procs) < 1:
        print("--builds, --tokens, --watchers and --watcher-procs must be >= 1", file=sys.stderr)
        return 2
    if args.tokens_per_s <= 0 or args.flush_ms <= 0:
        print("--tokens-per-s and --flush-ms must be positive", file=sys.stderr)
        return 2
    config = StreamConfig(
        builds=args.builds,
        tokens=args.tokens,
        tokens_per_s=args.tokens_per_s,
        watchers=args.watchers,
        watcher_procs=args.watcher_procs,
        flush_ms=args.flush_ms,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        py_spy=args.py_spy,
        log_level=args.log_level.upper(),
        logs=args.logs,
    )
    script = Path(__file__).resolve()
    return run_services_bench(
        "token-stream-",
        lambda workdir: run_bench(config, workdir, script),
        logs=config.logs,
        py_spy=config.py_spy,
        as_json=args.json,
        check=args.check,
        render=render_table,
        missed=missed,
    )


if __name__ == "__main__":
    raise SystemExit(main())
