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

The bench's modules are in `cycle_bench/` (one per concept, see its `__init__`); this script
reads the command line and runs them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from cycle_bench.config import SERVICES, TARGET_P50_MS, BenchConfig
from cycle_bench.report import render_table
from cycle_bench.run import run_bench
from harness import (
    add_output_options,
    add_server_options,
    in_workdir,
    py_spy_command,
    run_and_report,
)


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
    add_server_options(parser)
    add_output_options(parser)
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
