"""`noop` mode's side-by-side: the deployers on the noop target against procrastinate's
no-op jobs, per process count, as plain data and as lines of the report.

The project's target: appforge's jobs/s at least 1.0x procrastinate's, and its pickup p99
(claim latency) no worse than procrastinate's defer -> start p99. The bench prints whether
it is met and never fails on it.
"""

from __future__ import annotations

import dataclasses
import statistics
from importlib import metadata
from typing import Any

import psycopg

from .config import BenchConfig
from .procrastinate_app import worker_pool_size
from .procrastinate_results import QueueResult
from .results import PhaseResult

TARGET_RATIO = 1.0  # appforge jobs/s over procrastinate's, at least


def procrastinate_config(config: BenchConfig) -> dict[str, Any]:
    """How procrastinate ran: version, driver, polling, pool."""
    return {
        "version": metadata.version("procrastinate"),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__} implementation)",
        "listen_notify": True,
        "fetch_job_polling_interval_s": config.procrastinate_poll_interval,
        "worker_pool_size": worker_pool_size(config.workers),
        "client_pool_size": config.concurrency,
    }


def _side_by_side(appforge: PhaseResult, other: QueueResult) -> dict[str, Any]:
    ratio = appforge.deployments_per_s / other.jobs_per_s if other.jobs_per_s else 0.0
    return {
        "processes": appforge.processes,
        "appforge_jobs_per_s": appforge.deployments_per_s,
        "procrastinate_jobs_per_s": other.jobs_per_s,
        "ratio": ratio,
        "appforge_pickup_p50_ms": appforge.claim.p50_ms,
        "appforge_pickup_p99_ms": appforge.claim.p99_ms,
        "procrastinate_pickup_p50_ms": other.pickup.p50_ms,
        "procrastinate_pickup_p99_ms": other.pickup.p99_ms,
        "appforge_cpu_ms_per_job": {
            "deployers": appforge.cpu_ms_per_deployment["deployers"],
            "chat": appforge.cpu_ms_per_deployment["chat"],
            "postgres": appforge.cpu_ms_per_deployment["postgres"],
        },
        "procrastinate_cpu_ms_per_job": {
            "workers": other.cpu_ms_per_job["workers"],
            "postgres": other.cpu_ms_per_job["postgres"],
        },
        "target_met": ratio >= TARGET_RATIO and appforge.claim.p99_ms <= other.pickup.p99_ms,
    }


def comparison(
    config: BenchConfig,
    one: PhaseResult,
    two: PhaseResult,
    queue_one: QueueResult,
    queue_two: QueueResult,
) -> dict[str, Any]:
    """procrastinate's results and the side-by-side, as plain data (part of `--json`)."""
    return {
        "procrastinate": {
            "config": procrastinate_config(config),
            "one_process": dataclasses.asdict(queue_one),
            "two_processes": dataclasses.asdict(queue_two),
            "ratio": queue_two.jobs_per_s / queue_one.jobs_per_s if queue_one.jobs_per_s else 0.0,
        },
        "comparison": {
            "target_ratio": TARGET_RATIO,
            "one_process": _side_by_side(one, queue_one),
            "two_processes": _side_by_side(two, queue_two),
        },
    }


@dataclasses.dataclass(frozen=True)
class Round:
    """One round of `noop` mode: both queues with one process, then with two."""

    one: PhaseResult
    queue_one: QueueResult
    two: PhaseResult
    queue_two: QueueResult

    @property
    def correct(self) -> bool:
        phases = (self.one, self.queue_one, self.two, self.queue_two)
        return not any(p.checks.problems for p in phases)


def rounds_summary(rounds: list[Round]) -> dict[str, Any]:
    """Every round's jobs/s and pickup p99 of both queues, and their medians, which judge
    the target (as plain data, part of `--json`)."""

    def sides(appforge: PhaseResult, other: QueueResult) -> dict[str, float]:
        return {
            "appforge_jobs_per_s": appforge.deployments_per_s,
            "procrastinate_jobs_per_s": other.jobs_per_s,
            "ratio": appforge.deployments_per_s / other.jobs_per_s if other.jobs_per_s else 0.0,
            "appforge_pickup_p99_ms": appforge.claim.p99_ms,
            "procrastinate_pickup_p99_ms": other.pickup.p99_ms,
        }

    per_round = [
        {"one_process": sides(r.one, r.queue_one), "two_processes": sides(r.two, r.queue_two)}
        for r in rounds
    ]
    medians: dict[str, Any] = {}
    for key in ("one_process", "two_processes"):
        columns = per_round[0][key].keys()
        median = {c: statistics.median(r[key][c] for r in per_round) for c in columns}
        median["target_met"] = median["ratio"] >= TARGET_RATIO and (
            median["appforge_pickup_p99_ms"] <= median["procrastinate_pickup_p99_ms"]
        )
        medians[key] = median
    return {"rounds": {"each": per_round, "median": medians}}


def render_rounds(result: dict[str, Any]) -> list[str]:
    """The rounds, one line each per process count, and the medians."""
    rounds = result["rounds"]
    lines = [
        "",
        "rounds (alternating; the medians judge the target): jobs/s appforge / procrastinate"
        " = ratio, pickup p99 ms appforge / procrastinate",
    ]
    for key, label in (("one_process", "1 process"), ("two_processes", "2 procs")):
        for n, r in enumerate(rounds["each"], start=1):
            lines.append(f"  {label:10}round {n}  {_round_line(r[key])}")
        m = rounds["median"][key]
        verdict = "met" if m["target_met"] else "missed"
        lines.append(f"  {label:10}median   {_round_line(m)}   target {verdict}")
    return lines


def _round_line(r: dict[str, Any]) -> str:
    return (
        f"{r['appforge_jobs_per_s']:7.1f} / {r['procrastinate_jobs_per_s']:7.1f} = "
        f"{r['ratio']:.2f}x   {r['appforge_pickup_p99_ms']:7.1f} / "
        f"{r['procrastinate_pickup_p99_ms']:7.1f}"
    )


def _pct(values: list[float]) -> str:
    return " / ".join(f"{100 * v:.0f}%" for v in values)


def _queue_lines(result: dict[str, Any]) -> list[str]:
    q = result["procrastinate"]
    c = q["config"]
    lines = [
        f"procrastinate {c['version']} (psycopg {c['psycopg']}): as many no-op jobs,",
        f"{result['config']['workers_per_process']} job slots per worker process, LISTEN/NOTIFY "
        f"on, fetch polling {c['fetch_job_polling_interval_s']:g}s, "
        f"{result['config']['concurrency']} defers in flight",
        "",
        f"{'':17}{'defer/s':>8}{'jobs/s':>9}{'elapsed s':>10}"
        "   defer -> start ms: p50 / p95 / p99 / max",
    ]
    phases = [("1 worker proc", q["one_process"]), ("2 worker procs", q["two_processes"])]
    for label, p in phases:
        k = p["pickup"]
        lines.append(
            f"{label:17}{p['defer_per_s']:8.1f}{p['jobs_per_s']:9.1f}{p['elapsed_s']:10.1f}"
            f"   {k['p50_ms']:.1f} / {k['p95_ms']:.1f} / {k['p99_ms']:.1f} / {k['max_ms']:.1f}"
        )
    lines.append(f"{'ratio 2/1':17}{'':8}{q['ratio']:9.2f}   (jobs/s)")
    lines.append("")
    lines.append(
        f"{'':17}{'CPU ms/job: workers / pg / client':>34}{'loop busy':>12}"
        "   machine busy / iowait / steal"
    )
    for label, p in phases:
        cpu, m = p["cpu_ms_per_job"], p["machine_cpu"]
        shares = f"{cpu['workers']:.2f} / {cpu['postgres']:.2f} / {cpu['client']:.2f}"
        machine = _pct([m["busy"], m["iowait"], m["steal"]])
        lines.append(f"{label:17}{shares:>34}{_pct(p['loop_busy']):>12}{machine:>32}")
    for label, p in phases:
        k = p["checks"]
        n = p["jobs"]
        verdict = "OK" if not k["problems"] else "FAIL"
        per = " / ".join(str(j) for j in p["jobs_per_process"])
        lines.append(
            f"  {label:15}{verdict:5}{k['succeeded']}/{n} succeeded, {k['one_start']}/{n} "
            f"started once, jobs per process {per}"
        )
        lines += [f"{'':22}{problem}" for problem in k["problems"]]
        if p["defer_errors"]:
            lines.append(f"{'':22}defer errors {p['defer_errors']}: {p['first_defer_error']}")
    return lines


def _pair(p50: float, p99: float) -> str:
    return f"{p50:.1f} / {p99:.1f}"


def render_comparison(result: dict[str, Any]) -> list[str]:
    """procrastinate's own numbers, then the side-by-side, as lines of the report."""
    lines = ["", *_queue_lines(result), ""]
    cmp = result["comparison"]
    rows = [("1 process", cmp["one_process"]), ("2 procs", cmp["two_processes"])]
    lines.append(
        f"appforge (noop target) vs procrastinate (no-op task); target: jobs/s ratio >= "
        f"{cmp['target_ratio']:.1f}x, pickup p99 no worse"
    )
    lines.append(
        f"{'':10}{'jobs/s: appforge':>17}{'procr.':>9}{'ratio':>8}"
        f"{'pickup ms p50 / p99: appforge':>33}{'procr.':>18}   target"
    )
    for label, s in rows:
        a_pickup = _pair(s["appforge_pickup_p50_ms"], s["appforge_pickup_p99_ms"])
        q_pickup = _pair(s["procrastinate_pickup_p50_ms"], s["procrastinate_pickup_p99_ms"])
        lines.append(
            f"{label:10}{s['appforge_jobs_per_s']:17.1f}{s['procrastinate_jobs_per_s']:9.1f}"
            f"{s['ratio']:7.2f}x{a_pickup:>33}{q_pickup:>18}   "
            f"{'met' if s['target_met'] else 'missed'}"
        )
    lines.append(
        f"{'':10}{'CPU ms/job: appforge deployers / chat / pg':>45}{'procr. workers / pg':>24}"
    )
    for label, s in rows:
        a, q = s["appforge_cpu_ms_per_job"], s["procrastinate_cpu_ms_per_job"]
        a_cpu = f"{a['deployers']:.2f} / {a['chat']:.2f} / {a['postgres']:.2f}"
        q_cpu = f"{q['workers']:.2f} / {q['postgres']:.2f}"
        lines.append(f"{label:10}{a_cpu:>45}{q_cpu:>24}")
    lines.append(
        "pickup: appforge created_us -> first attempt's started_us; procrastinate the "
        "`deferred`\nevent -> the `started` event. Both queues get the jobs faster than they "
        "run them, so\nwhile the load lasts pickup is mostly the wait in the queue."
    )
    if "rounds" in result:
        lines += render_rounds(result)
    return lines
