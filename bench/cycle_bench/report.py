"""The results: each kind of cycle summarised, the ratio and the target as plain data (what
`--json` prints), and the human-readable table."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from appforge.api.flow.v1 import flow_pb2

from .config import SERVICES, BenchConfig
from .cycles import PhaseResult
from .samples import BASELINE_PHASES, CYCLE_PHASES, INTERVALS, TIMELINE, Stat, between


def summarise(
    phase: PhaseResult, phases: Sequence[tuple[str, str, str]], total_from: str = "call"
) -> dict[str, Any]:
    ok = [s for s in phase.samples if s.ok]
    errors = Counter(s.error for s in phase.samples if not s.ok)
    return {
        "cycles": len(phase.samples),
        "served": len(ok),
        "errors": dict(errors.most_common(5)),
        "wall_s": phase.wall_s,
        "cycles_per_s": len(ok) / phase.wall_s if phase.wall_s else 0.0,
        "total": dataclasses.asdict(between(ok, total_from, "served")),
        "phases": {label: dataclasses.asdict(between(ok, a, b)) for label, a, b in phases},
        "timeline": {
            name: dataclasses.asdict(between(ok, "call", name))
            for name, _ in TIMELINE
            if any(name in s.events for s in ok)
        },
        "intervals": {
            label: dataclasses.asdict(between(ok, a, b))
            for label, a, b in INTERVALS
            if any(b in s.events and (a == "call" or a in s.events) for s in ok)
        },
        "flow_items": Stat.of([s.items for s in ok]).p50_ms,
        "get_tries": dict(Counter(s.get_tries for s in ok)),
        "cpu": phase.cpu,
        "samples_ms": [round(s.events["served"], 2) for s in ok],
    }


def report(
    config: BenchConfig, files: Sequence[flow_pb2.File], cycle: PhaseResult, baseline: PhaseResult
) -> dict[str, Any]:
    """The results as plain data (what `--json` prints)."""
    built = summarise(cycle, CYCLE_PHASES)
    deployed = summarise(baseline, BASELINE_PHASES)
    c, b = built["total"], deployed["total"]
    every_served = built["served"] == built["cycles"] and built["cycles"] > 0
    return {
        "config": {
            "builds": config.builds,
            "concurrency": config.concurrency,
            "warmup": config.warmup,
            "prompt": config.prompt,
            "model": "scripted",
            "poll_interval_s": config.poll_interval,
            "deploy_workers": config.workers,
            "log_level": config.log_level,
            "files": {f.path: len(f.content) for f in files},
            "cpus": os.cpu_count(),
        },
        "cycle": built,
        "baseline": deployed,
        "ratio": {
            "p50": c["p50_ms"] / b["p50_ms"] if b["p50_ms"] else 0.0,
            "p95": c["p95_ms"] / b["p95_ms"] if b["p95_ms"] else 0.0,
            "build_adds_p50_ms": c["p50_ms"] - b["p50_ms"],
            "build_share_p50": 1 - b["p50_ms"] / c["p50_ms"] if c["p50_ms"] else 0.0,
        },
        "target": {
            "p50_ms": config.target_p50_ms,
            "value_ms": c["p50_ms"],
            "every_cycle_served": every_served,
            "pass": every_served and c["p50_ms"] <= config.target_p50_ms,
        },
    }


# --- the report ---------------------------------------------------------------------------


def _row(label: str, stat: dict[str, Any], width: int = 44) -> str:
    return (
        f"  {label:{width}}{stat['p50_ms']:9.1f}{stat['p95_ms']:9.1f}{stat['max_ms']:9.1f}"
        f"{stat['count']:6d}"
    )


def _cell(stat: dict[str, Any] | None) -> str:
    return f"{stat['p50_ms']:9.1f} / {stat['p95_ms']:<8.1f}" if stat else f"{'-':>9}{'':11}"


def _timeline_rows(result: dict[str, Any]) -> list[str]:
    cycle, base = result["cycle"], result["baseline"]
    head = f"{'cycle':>9}{'':11}{'baseline':>9}{'':11}"
    lines = [f"  {'timeline, ms after the call: p50 / p95':44}{head}"]
    for name, label in TIMELINE:
        lines.append(
            f"  {label:44}{_cell(cycle['timeline'].get(name))}{_cell(base['timeline'].get(name))}"
        )
    lines.append("")
    lines.append(f"  {'intervals, ms: p50 / p95':44}{head}")
    for label, _, _ in INTERVALS:
        lines.append(
            f"  {label:44}{_cell(cycle['intervals'].get(label))}"
            f"{_cell(base['intervals'].get(label))}"
        )
    return lines


def _cpu_rows(result: dict[str, Any]) -> list[str]:
    names = ["chat", "builder", "deployer", "postgres", "redis", "client"]
    lines = [
        f"  {'CPU ms per cycle':17}" + "".join(f"{n:>10}" for n in names) + "   loop busy c/b/d"
    ]
    machine = []
    for kind in ("cycle", "baseline"):
        cpu = result[kind]["cpu"]
        cells = "".join(f"{cpu['ms_per_cycle'].get(n, 0.0):10.1f}" for n in names)
        busy = " / ".join(f"{100 * cpu['loop_busy'].get(n, 0.0):.0f}%" for n in SERVICES)
        m = cpu["machine"]
        lines.append(f"  {kind:17}{cells}   {busy}")
        machine.append(
            f"  machine, {kind}: {100 * m['busy']:.0f}% busy "
            f"({100 * m['other']:.0f}% not these processes), "
            f"{100 * m['iowait']:.0f}% iowait, {100 * m['steal']:.0f}% steal, "
            f"{cpu['pg_backends']} PostgreSQL connections"
        )
    lines += machine
    lines.append(
        "  (postgres: the backends of the bench database; redis: all redis-server processes;\n"
        "  loop busy: the CPU share of each service's main thread, where its event loop runs)"
    )
    return lines


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = result["config"]
    files = ", ".join(f"{path} {size:,} B" for path, size in cfg["files"].items())
    lines = [
        f"cycle: {cfg['builds']} builds of {cfg['prompt']!r} ({cfg['model']} model), "
        f"{cfg['concurrency']} at a time after {cfg['warmup']} warm-up; deploy poll "
        f"{cfg['poll_interval_s']:g}s, {cfg['deploy_workers']} workers; {cfg['cpus']} CPUs",
        f"files: {files}",
        "",
        f"  {'':44}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'n':>6}",
    ]
    for kind, title in (("cycle", "Build -> served"), ("baseline", "Deploy -> served")):
        part = result[kind]
        lines.append(_row(f"{title} ({kind})", part["total"]))
        lines += [_row(f"  {label}", stat) for label, stat in part["phases"].items()]
        extra = f"{part['served']}/{part['cycles']} served, {part['cycles_per_s']:.1f} cycles/s"
        lines.append(f"  {'':4}{extra}; GETs per cycle {part['get_tries']}")
        lines += [f"  {'':4}{n} x {error}" for error, n in part["errors"].items()]
    r = result["ratio"]
    lines += [
        "",
        f"  ratio cycle / baseline: p50 {r['p50']:.2f}, p95 {r['p95']:.2f}; the build adds "
        f"{r['build_adds_p50_ms']:.0f} ms at p50 ({100 * r['build_share_p50']:.0f}% of the cycle)",
        f"  flow items per build (p50): {result['cycle']['flow_items']:.0f}",
        "",
        *_timeline_rows(result),
        "",
        *_cpu_rows(result),
        "",
    ]
    t = result["target"]
    verdict = "PASS" if t["pass"] else "MISS"
    served = "every cycle served" if t["every_cycle_served"] else "NOT every cycle served"
    lines.append(
        f"target: cycle p50 <= {t['p50_ms']:.0f} ms: p50 {t['value_ms']:.1f} ms, {served}"
        f"  ->  {verdict}"
    )
    return "\n".join(lines)
