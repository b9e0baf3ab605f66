"""The results: as plain data (what `--json` prints) and as the human-readable table; in
`noop` mode with procrastinate's numbers and the side-by-side (`compare`) after it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from .artifact import Artifact
from .compare import comparison, render_comparison
from .config import BenchConfig
from .procrastinate_results import QueueResult
from .results import PhaseResult
from .wake import render_wake


def report(
    config: BenchConfig,
    artifact: Artifact,
    one: PhaseResult,
    two: PhaseResult,
    queues: tuple[QueueResult, QueueResult] | None = None,
) -> dict[str, Any]:
    """The results as plain data (what `--json` prints); `queues`: procrastinate's one and
    two worker processes, in `noop` mode."""
    sizes = [len(artifact.files("x")[0].content), *(len(f.content) for f in artifact.shared)]
    correct = not one.checks.problems and not two.checks.problems
    if queues is not None:
        correct = correct and not any(q.checks.problems for q in queues)
    result: dict[str, Any] = {
        "config": {
            "mode": config.mode,
            "deployments": config.deployments,
            "files": len(sizes),
            "artifact_bytes": sum(sizes),
            "workers_per_process": config.workers,
            "concurrency": config.concurrency,
            "poll_interval_s": config.poll_interval,
            "seed": config.seed,
            "cpus": os.cpu_count(),
        },
        "one_process": dataclasses.asdict(one),
        "two_processes": dataclasses.asdict(two),
        "ratio": two.deployments_per_s / one.deployments_per_s if one.deployments_per_s else 0.0,
        "correct": correct,
    }
    if queues is not None:
        result.update(comparison(config, one, two, *queues))
    return result


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} B"


def _pct(values: Sequence[float]) -> str:
    return " / ".join(f"{100 * v:.0f}%" for v in values)


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report."""
    if result["config"]["mode"] == "wake":
        return render_wake(result)
    cfg = result["config"]
    phases = [("1 deployer", result["one_process"]), ("2 deployers", result["two_processes"])]
    lines = [
        f"deployer: {cfg['deployments']:,} deployments of a {cfg['files']}-file app "
        f"({_size(cfg['artifact_bytes'])}) to the {cfg['mode']} target,",
        f"{cfg['workers_per_process']} workers per deployer process, {cfg['concurrency']} "
        f"Deploy calls in flight, poll {cfg['poll_interval_s']:g}s, {cfg['cpus']} CPUs",
        "",
        f"{'':13}{'enqueue/s':>10}{'deploys/s':>10}{'elapsed s':>10}"
        f"   claim latency ms: p50 / p95 / p99 / max",
    ]
    for label, p in phases:
        c = p["claim"]
        lines.append(
            f"{label:13}{p['enqueue_per_s']:10.1f}{p['deployments_per_s']:10.1f}"
            f"{p['elapsed_s']:10.1f}   {c['p50_ms']:.0f} / {c['p95_ms']:.0f} / "
            f"{c['p99_ms']:.0f} / {c['max_ms']:.0f}"
        )
    lines.append(f"{'ratio 2/1':13}{'':10}{result['ratio']:10.2f}   (deployments/s)")
    lines.append("")
    lines.append(f"{'':13}{'attempt ms p50 / p99':>22}{'end-to-end ms p50 / p99':>26}")
    for label, p in phases:
        a, e = p["attempt"], p["end_to_end"]
        lines.append(
            f"{label:13}{a['p50_ms']:13.0f} / {a['p99_ms']:<6.0f}"
            f"{e['p50_ms']:17.0f} / {e['p99_ms']:<6.0f}"
        )
    lines.append("")
    lines.append(
        f"{'':13}{'CPU ms/deployment: deployers / chat / pg / client':>49}"
        f"{'loop busy':>12}   machine busy / iowait / steal"
    )
    for label, p in phases:
        cpu, m = p["cpu_ms_per_deployment"], p["machine_cpu"]
        shares = f"{cpu['deployers']:.1f} / {cpu['chat']:.1f} / {cpu['postgres']:.1f} / "
        shares += f"{cpu['client']:.1f}"
        lines.append(
            f"{label:13}{shares:>49}{_pct(p['loop_busy']):>12}   "
            f"{_pct([m['busy'], m['iowait'], m['steal']]):>29}"
        )
    lines.append("")
    lines.append("correctness")
    for label, p in phases:
        k = p["checks"]
        n = p["deployments"]
        verdict = "OK" if not k["problems"] else "FAIL"
        claims = " / ".join(str(c) for c in p["claims_per_process"])
        dirs = f"{k['version_dirs']} version dirs"
        if cfg["mode"] == "local":
            dirs += f" ({k['versions_complete']} complete)"
        lines.append(
            f"  {label:12}{verdict:5}{k['succeeded']}/{n} SUCCEEDED, {k['one_attempt']}/{n} "
            f"with one attempt, {dirs},"
        )
        lines.append(
            f"{'':19}{k['staging_left']} staging dirs left, claims per process {claims}, "
            f"{k['notices_delivered']}/{n} notices acked by chat"
        )
        lines.append(
            f"{'':19}({k['notice_tries']} deliveries, the last "
            f"{k['notice_lag_s']:.1f}s after the last deployment ended)"
        )
        lines += [f"{'':19}{problem}" for problem in k["problems"]]
        if p["enqueue_errors"]:
            lines.append(f"{'':19}Deploy errors {p['enqueue_errors']}: {p['first_enqueue_error']}")
    lines.append("")
    lines.append(
        "claim latency: created_us -> first attempt's started_us. Deploy calls arrive faster\n"
        "than the workers publish, so it is mostly the wait in the queue. loop busy: the CPU\n"
        "share of each deployer's main thread (100% = its asyncio event loop is saturated)."
    )
    if "comparison" in result:
        lines += render_comparison(result)
    return "\n".join(lines)
