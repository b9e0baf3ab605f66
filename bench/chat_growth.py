"""Benchmark: does the cost of a chat write, and of watching it, grow with the message?

Issue 10: before the delta protocol, every UpsertAssistantMessage re-read and returned the
whole message and every WatchApp event carried it whole, so an execution's calls got slower
as its message grew and a watcher received the message once per write. This bench sends
`--items` (2,000) UpsertAssistantMessage calls for ONE execution, one at a time, each adding
one new `--item-bytes` (200) byte text item (seq 1..N; `--tools-every K` makes every K-th
new item a tools item with a PENDING call that the next call moves to SUCCEEDED), and times
each call. One WatchApp watcher (BASIC, the default view; `--view full` for whole messages)
runs in a process of its own (this script with `--watch-child`), counts the bytes of every
event it receives and applies them with `appforge.api.chat.v1.deltas.Messages`. At the end
its message must be byte-identical (deterministic serialisation) to GetMessageByExecution's.

Printed: p50/p99 of the first and the last `--window` (50) calls and their p50 ratio (target
<= 1.2), the final message's size, the watcher's bytes and their ratio to it (target <= 3),
CPU ms per call of chat, PostgreSQL, the watcher and this client, and PASS/MISS per target
(the targets are set for the BASIC view: with `--view full` they are shown, not judged).

Against the real service as a separate OS process: `appforge migrate` and `appforge serve
chat` on PostgreSQL and Redis, in a database of its own (`appforge_bench_<random>`, dropped
at the end); readiness through the gRPC health service, with a bound. `--warmup` (200) calls
on another app and execution go first, unmeasured and unwatched.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/chat_growth.py                  # the default run, under a minute
    python bench/chat_growth.py --view full      # the watcher asks for whole messages
    python bench/chat_growth.py --json --check   # machine-readable; exit 3 on a MISS
    python bench/chat_growth.py --py-spy /tmp/growth.txt   # also profile chat

The exit status is 1 when the bench cannot measure, 3 when the watcher's message differs
from chat's and, with `--check`, 3 when a target is missed (a failed call misses one).

The bench's modules are in `chat_growth_bench/` (one per concept, see its `__init__`); it
shares `harness` with the other benches and chat_upsert's app setup and CPU sampling.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from chat_growth_bench.config import VIEWS, GrowthConfig
from chat_growth_bench.report import missed, render_table
from chat_growth_bench.run import run_bench
from chat_growth_bench.watcher import watch_child
from harness import (
    add_output_options,
    add_server_options,
    in_workdir,
    py_spy_command,
    run_and_report,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark how chat's write and watch costs grow with one execution's message.",
    )
    parser.add_argument("--items", type=int, default=2_000, help="calls, one new item each")
    parser.add_argument("--item-bytes", type=int, default=200, help="bytes of each text item")
    parser.add_argument("--window", type=int, default=50, help="calls in the early/late windows")
    parser.add_argument(
        "--tools-every", type=int, default=0, help="every K-th new item a tools item (0: none)"
    )
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls first")
    parser.add_argument("--view", choices=VIEWS, default="basic", help="the watcher's view")
    add_server_options(parser)
    add_output_options(parser)
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="profile the chat service with py-spy into FILE"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the logs in DIR")
    child = parser.add_argument_group("internal: the watcher process")
    child.add_argument("--watch-child", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--chat", default="", help=argparse.SUPPRESS)
    child.add_argument("--watch-app", default="", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.watch_child:
        asyncio.run(watch_child(args.chat, args.watch_app, args.view))
        return 0
    if args.items < 1 or args.item_bytes < 1 or args.window < 1 or args.window > args.items:
        print(
            "--items, --item-bytes and --window must be positive, --window <= --items",
            file=sys.stderr,
        )
        return 2
    if args.tools_every < 0 or args.warmup < 0:
        print("--tools-every and --warmup must not be negative", file=sys.stderr)
        return 2
    if args.py_spy is not None and py_spy_command() is None:
        print("--py-spy needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    config = GrowthConfig(
        items=args.items,
        item_bytes=args.item_bytes,
        window=args.window,
        tools_every=args.tools_every,
        warmup=args.warmup,
        view=args.view,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        py_spy=args.py_spy,
    )
    script = Path(__file__).resolve()
    result = run_and_report(
        in_workdir(
            "chat-growth-", lambda workdir: run_bench(config, workdir, script), args.workdir
        ),
        as_json=args.json,
        render=render_table,
        py_spy=config.py_spy,
    )
    if isinstance(result, int):
        return result
    if not result["correct"]:
        return 3
    return 3 if args.check and missed(result) else 0


if __name__ == "__main__":
    raise SystemExit(main())
