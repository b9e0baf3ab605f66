"""Benchmark: the deployer's durable queue, with one and with two deployer processes.

What is measured, in one run, twice: first with ONE `appforge serve deployer` process, then
with TWO sharing the same database and the same deploy root. Each configuration gets a fresh
database (`appforge migrate`), a fresh deploy root and its own `appforge serve chat` (the
deployer delivers each deployment's end to chat, so notices are part of the work), all as
separate OS processes on PostgreSQL (asyncpg) and Redis.

The load (`--mode local`, the default): `--deployments` `DeployerService.Deploy` calls,
`--concurrency` in flight, spread round-robin over the deployer processes' gRPC ports
(replicas behind a load balancer). Every call deploys the same `--files`-file static app (an
`index.html` that names its version, scripts, styles, SVGs and a manifest, 1-4 KiB each) to
the `local` target for one app made through chat's `CreateApp`, each with its own
`app_version_id` and `execution_id`. The deployers start claiming while the calls are still
coming in: `--workers` worker tasks per process, polling every `--poll-interval` seconds and
woken at once by a Deploy in their own process.

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

`--mode noop` measures the queue alone, against another job queue on the same PostgreSQL:

- appforge: the same two configurations, the deployers run with `APPFORGE_DEPLOY_TARGET=noop`
  (a target that publishes nothing) and every Deploy carries a one-file artifact of a few
  bytes and names no target (so the server's default, noop, applies), still with its
  `execution_id`: the outbox notice to chat stays part of the work. Checked: every
  deployment SUCCEEDED with one attempt, no version directory written, every notice acked.
- procrastinate (3.10, `procrastinate[psycopg]`): after each appforge configuration, one
  with as many procrastinate worker processes (`deployer_bench/procrastinate_app.py`, run
  as `python -m deployer_bench.procrastinate_app`), each with `--workers` job slots,
  LISTEN/NOTIFY on (its default) and its fetch polling interval at
  `--procrastinate-poll-interval` (default: `--poll-interval`, where procrastinate's own
  default is 5 s), on a fresh database of its own with procrastinate's schema applied. This
  client defers `--deployments` jobs of a no-op task, `--concurrency` `defer_async` calls in
  flight. Measured from procrastinate's `procrastinate_events`: jobs/s from the first defer
  sent to the last `succeeded` event; pickup, the `deferred` event to the `started` event,
  p50/p95/p99/max; CPU ms per job of the worker processes, PostgreSQL and this client.
  Checked: every job succeeded, started once.
- side by side, for 1 and 2 processes: jobs/s of both and the ratio appforge/procrastinate,
  pickup p50/p99 of both (appforge's claim latency), CPU ms per job. The project's target,
  appforge >= 1.0x procrastinate's jobs/s with a pickup p99 no worse, is printed as met or
  missed; it never changes the exit status.

`--mode wake` measures how soon a Deploy sent to a replica whose workers are all busy
starts on another one (`deployer_bench/wake.py`): replica A's only worker is held in a
publish to an S3 endpoint that never answers, replica B starts after it with `--workers`
workers, both poll every 60 s. `--deployments` noop Deploys go to A one every 20 ms, then as
many to B itself (the baseline: woken in its own process). Printed: pickup p50/p95/p99/max
of both, the p99 ratio, and the target (p99 via the busy replica under 100 ms) as met or
missed. Checked: every one succeeded with one attempt, run on B.

The bench creates a database of its own per configuration (`appforge_bench_<random>`, also
for procrastinate's) and
drops it at the end, starts and stops its own processes (killing them by pid on error), and
waits for readiness on the gRPC health service with a bound.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/deployer.py                          # 1,000 deployments x 2, ~1.5 minutes
    python bench/deployer.py --deployments 300 --json # smaller, machine-readable output
    python bench/deployer.py --py-spy /tmp/deployer.txt   # also profile the single deployer
    python bench/deployer.py --mode noop              # the queue alone, against procrastinate
    python bench/deployer.py --mode noop --py-spy /tmp/noop.txt  # profile the noop deployer
    python bench/deployer.py --mode wake --deployments 500   # busy replica -> another one

The exit status is 1 when the bench cannot measure and 3 when a correctness check fails.

The bench's modules are in `deployer_bench/` (one per concept, see its `__init__`); this
script reads the command line and runs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deployer_bench.config import MODES, BenchConfig
from deployer_bench.report import render_table
from deployer_bench.run import run_bench
from harness import (
    add_output_options,
    add_server_options,
    in_workdir,
    py_spy_command,
    run_and_report,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark the deployer's queue with one and with two deployer processes.",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="local",
        help="local: publish --files files; noop: the noop target against procrastinate; "
        "wake: Deploys to a replica whose workers are all busy",
    )
    parser.add_argument("--deployments", type=int, default=1_000, help="per configuration")
    parser.add_argument("--files", type=int, default=20, help="files per deployment")
    parser.add_argument("--workers", type=int, default=4, help="worker tasks per deployer")
    parser.add_argument("--concurrency", type=int, default=16, help="Deploy calls in flight")
    parser.add_argument(
        "--poll-interval", type=float, default=0.05, help="APPFORGE_DEPLOY_POLL_INTERVAL (s)"
    )
    parser.add_argument(
        "--procrastinate-poll-interval",
        type=float,
        default=None,
        help="noop mode: procrastinate's fetch_job_polling_interval (s); default "
        "--poll-interval (procrastinate's own default is 5)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="noop mode: how many times both queues run, alternating (the medians judge)",
    )
    parser.add_argument("--seed", type=int, default=1)
    add_server_options(parser)
    add_output_options(parser, check=False)
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="profile the single deployer into FILE"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.deployments, args.workers, args.concurrency, args.rounds) < 1 or args.files < 2:
        print(
            "--deployments, --workers, --concurrency, --rounds >= 1 and --files >= 2",
            file=sys.stderr,
        )
        return 2
    if args.py_spy is not None and py_spy_command() is None:
        print("--py-spy needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    config = BenchConfig(
        mode=args.mode,
        deployments=args.deployments,
        files=args.files,
        workers=args.workers,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        seed=args.seed,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        procrastinate_poll_interval=(
            args.poll_interval
            if args.procrastinate_poll_interval is None
            else args.procrastinate_poll_interval
        ),
        py_spy=args.py_spy,
        rounds=args.rounds if args.mode == "noop" else 1,
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
