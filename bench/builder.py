"""Benchmark: flow items through the builder, and how soon they reach 100 WatchApp watchers.

What is measured, in one run, with the same services, apps and watchers throughout:

1. **builder** - `appforge serve builder` with the `openai` model pointed at a fake
   OpenAI-compatible endpoint that this script serves on loopback. The endpoint answers
   every turn at once with a short text and `--calls-per-turn` cheap tool calls
   (`write_file` of a small file, `list_files`, `read_file`), and ends each build with a
   text-only turn. Builds are 2 to 2 x `--turns` - 2 turns long, `--turns` on average (the
   length of build n is drawn from a generator seeded with n, so both phases get the same
   lengths, and builds do not all end at once). The endpoint is also the pacer:
   it releases turns so that about `--rate` new flow items per second are produced (a turn
   with tools makes two new items, its text and its tool batch; the last turn makes one).
   `--builds` Build calls are in flight; a finished build is replaced at once. Every build
   ends with a real Deploy to `appforge serve deployer` (local target).
2. **baseline** - no builder: the bench writes the same chat traffic itself with
   `ChatService.UpsertAssistantMessage` (and `PostUserMessage`), upsert for upsert what the
   builder sends for a build: the user message, the PROCESSING message, per turn the text
   and the PENDING batch in one upsert, then STREAMING and SUCCEEDED per call, the
   completion, the final notice and the deployer's "deployed" notice. Same pacing, same
   number of executions in flight, same apps, same watchers.

Throughout, `--watchers` `ChatService.WatchApp` streams (spread evenly over `--apps` apps,
the apps the builds are spread over) run in `--watcher-procs` separate processes (this
script with `--watch-child`). For every watcher and every flow item (execution_id, seq)
the watcher records the wall-clock time it first receives a MessageEvent whose message
holds the item, minus the item's `FlowItem.timestamp` (stamped by the builder from the wall
clock before it allocates the item; stamped by the bench just before the upsert in the
baseline). The percentiles are over every (watcher, item) pair of the items stamped in the
measured window.

Printed for each phase: offered and achieved new items/s; for the builder the items the
Build streams carry per second (every `BuildEvent.item`, new items - distinct
(execution_id, seq) - and tool-call state updates); stamp -> watcher latency p50/p90/p99/
p99.9/max, also per item for the last watcher to get it; whether every watcher saw every
item; how often chat's change events reached Redis out of cursor order (each such event
sends every watcher of the app to the database to catch up); CPU per process (chat,
builder, deployer, PostgreSQL, Redis, this bench, the watcher processes, and what else ran
on the machine) and how busy the event-loop threads were; Build streams that never said
`finished` although their execution had ended (given up on 5 s after its end, reported).
Then the builder/baseline ratios and the target: builder p99 <= 10 ms with the offered
rate sustained (>= 95%) and no item missed by any watcher.

Everything shares the machine: on 2 cores the watchers' own CPU competes with the services,
and the CPU table says how much. The bench creates its own database
(`appforge_bench_<random>`, dropped at the end), starts and stops its own processes (by pid)
and waits for readiness with a bound.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/builder.py                        # the default run, under two minutes
    python bench/builder.py --rate 300 --json      # another offered rate, machine-readable
    python bench/builder.py --apps 1 --check       # 100 watchers on one app; exit 3 on MISS

The exit status is 1 when the bench cannot measure and, with `--check`, 3 when the target
is missed.

The bench's modules are in `builder_bench/` (one per concept, see its `__init__`); this
script reads the command line and runs them, or, with `--watch-child`, is a watcher process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from builder_bench.config import BenchConfig
from builder_bench.report import render_table
from builder_bench.run import run_bench
from builder_bench.watchers import watch_child
from harness import (
    add_output_options,
    add_server_options,
    add_service_options,
    run_services_bench,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark flow items through the builder to WatchApp watchers, against "
        "the same chat traffic written directly.",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="offered new flow items/s")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--watchers", type=int, default=100, help="WatchApp streams")
    parser.add_argument("--apps", type=int, default=10, help="apps (builds and watchers spread)")
    parser.add_argument("--builds", type=int, default=32, help="executions in flight")
    parser.add_argument(
        "--turns", type=int, default=10, help="model turns per build, on average (>= 2)"
    )
    parser.add_argument("--calls-per-turn", type=int, default=2, help="tool calls per turn")
    parser.add_argument("--watcher-procs", type=int, default=1, help="processes for the watchers")
    add_server_options(parser)
    add_output_options(parser)
    add_service_options(parser, profiled="during the builder's window")
    child = parser.add_argument_group("internal: a watcher process")
    child.add_argument("--watch-child", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--chat", default="", help=argparse.SUPPRESS)
    child.add_argument("--watch-apps", default="", help=argparse.SUPPRESS)
    child.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.watch_child:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch_child(args.chat, args.watch_apps.split(","), args.first))
        return 0
    counts = (args.watchers, args.apps, args.builds, args.calls_per_turn, args.watcher_procs)
    if min(counts) < 1 or args.turns < 2 or args.rate <= 0 or args.duration <= 0:
        print(
            "--watchers, --apps, --builds, --calls-per-turn, --watcher-procs >= 1, --turns >= 2, "
            "--rate and --duration > 0",
            file=sys.stderr,
        )
        return 2
    config = BenchConfig(
        rate=args.rate,
        duration=args.duration,
        warmup=max(0.0, args.warmup),
        watchers=args.watchers,
        apps=args.apps,
        builds=args.builds,
        turns=args.turns,
        calls_per_turn=args.calls_per_turn,
        watcher_procs=args.watcher_procs,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        py_spy=args.py_spy,
        log_level=args.log_level.upper(),
        logs=args.logs,
    )
    script = Path(__file__).resolve()
    return run_services_bench(
        "builder-bench-",
        lambda workdir: run_bench(config, workdir, script),
        logs=config.logs,
        py_spy=config.py_spy,
        as_json=args.json,
        check=args.check,
        render=render_table,
        missed=lambda result: not result["target"]["pass"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
