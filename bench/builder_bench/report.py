"""The results: each phase summarised, the builder/baseline ratios and the target as plain
data (what `--json` prints), and the human-readable table."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import BenchConfig
from .phase import PhaseRun

TARGET_P99_MS = 10.0
RATE_SUSTAINED = 0.95  # the offered rate counts as sustained at this share or more
OTHER_LOAD_WARNING = 0.2  # cores of other work on the machine worth a note in the report


def summarise(run: PhaseRun, watched: dict[str, Any], config: BenchConfig) -> dict[str, Any]:
    tally = run.tally
    seconds = max(1e-6, (run.window.end_us - run.window.start_us) / 1e6)
    produced = sum(tally.produced.values())
    missing = 0
    incomplete = 0
    for watcher, app_id in watched["watcher_apps"].items():
        lack = tally.produced[app_id] - watched["per_watcher"].get(watcher, 0)
        missing += max(0, lack)
        incomplete += lack > 0
    return {
        "window_s": seconds,
        "offered_items_per_s": config.rate,
        "achieved_items_per_s": produced / seconds,
        "new_items": produced,
        "build_item_events_per_s": tally.item_events / seconds,
        "build_new_items_per_s": tally.new_events / seconds,
        "build_updates_per_s": (tally.item_events - tally.new_events) / seconds,
        "upserts_per_s": tally.upserts / seconds,
        "executions_started": run.builds_started,
        "stuck_build_streams": run.stuck,
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
        "first_error": tally.first_error,
        "latency": watched["latency"].summary(),
        "first_watcher": watched["first"].summary(),
        "last_watcher": watched["last"].summary(),
        "build_stream": tally.stream_latency.summary(),
        "watchers": {
            "events_per_s": watched["events"] / seconds,
            "samples": watched["latency"].count,
            "expected_samples": sum(tally.produced[a] for a in watched["watcher_apps"].values()),
            "missing": missing,
            "incomplete_watchers": incomplete,
            "stream_errors": watched["errors"],
            "first_error": watched["first_error"],
            "loop_lag": watched["lag"].summary(),
        },
        "bus": {
            "events_per_s": run.bus.get("events", 0) / seconds,
            "gaps": run.bus.get("gaps", 0),
            "stale": run.bus.get("stale", 0),
            "catch_ups_estimated": run.bus.get("catch_ups", 0),
        },
        "cpu": run.cpu,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def report(
    config: BenchConfig, builder: dict[str, Any], baseline: dict[str, Any]
) -> dict[str, Any]:
    """The results as plain data (what `--json` prints)."""
    b, base = builder["latency"], baseline["latency"]
    sustained = builder["achieved_items_per_s"] >= RATE_SUSTAINED * config.rate
    complete = builder["watchers"]["missing"] == 0
    met = b["count"] > 0 and b["p99_ms"] <= TARGET_P99_MS and sustained and complete
    return {
        "config": {
            **{
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(config).items()
                if k != "admin_dsn"
            },
            "items_per_build": config.items_per_build,
            "cpus": os.cpu_count(),
        },
        "builder": builder,
        "baseline": baseline,
        "ratios": {
            "p50": _ratio(b["p50_ms"], base["p50_ms"]),
            "p99": _ratio(b["p99_ms"], base["p99_ms"]),
            "throughput": _ratio(builder["achieved_items_per_s"], baseline["achieved_items_per_s"]),
        },
        "target": {
            "p99_ms": TARGET_P99_MS,
            "value_ms": b["p99_ms"],
            "rate_sustained": sustained,
            "every_item_seen": complete,
            "pass": met,
        },
    }


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _latency_row(label: str, s: dict[str, float]) -> str:
    return (
        f"  {label:30}{s['p50_ms']:8.2f}{s['p90_ms']:8.2f}{s['p99_ms']:8.2f}"
        f"{s['p999_ms']:9.2f}{s['max_ms']:9.1f}{s['count']:>11,}"
    )


def _cpu_rows(phases: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    labels = ["chat", "builder", "deployer", "postgres", "redis", "bench", "watchers", "other"]
    lines = [
        "CPU in the window, in cores (1.00 = one core busy; other: the rest of the machine)",
        f"  {'':10}" + "".join(f"{k:>9}" for k in labels) + f"{'machine':>9}",
    ]
    for name, p in phases:
        cores = p["cpu"]["cores"]
        row = "".join(f"{cores.get(k, 0.0):9.2f}" for k in labels)
        lines.append(f"  {name:10}{row}{100 * p['cpu']['machine']['busy']:8.0f}%")
    lines.append("  event-loop (main) thread busy:")
    for name, p in phases:
        busy = p["cpu"]["loop_busy"]
        shown = ", ".join(
            f"{k} {100 * busy[k]:.0f}%" for k in ("chat", "builder", "watchers") if k in busy
        )
        lines.append(f"  {name:12}{shown}")
    return lines


def render_table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    phases = [("builder", result["builder"]), ("baseline", result["baseline"])]
    lines = [
        f"builder: {cfg['watchers']} WatchApp watchers on {cfg['apps']} app(s) in "
        f"{cfg['watcher_procs']} process(es), offered {cfg['rate']:,.0f} new flow items/s,",
        f"{cfg['builds']} executions in flight ({cfg['turns']} turns x {cfg['calls_per_turn']} "
        f"tool calls, {cfg['items_per_build']} new items per build on average), "
        f"{cfg['duration']:g}s measured "
        f"per phase after {cfg['warmup']:g}s warm-up, {cfg['cpus']} CPUs",
        "",
        f"{'':14}{'offered':>9}{'achieved':>10}   items/s; Build streams: all / new / updates",
    ]
    for name, p in phases:
        extra = (
            f"{p['build_item_events_per_s']:.0f} / {p['build_new_items_per_s']:.0f} / "
            f"{p['build_updates_per_s']:.0f}"
            if name == "builder"
            else f"(no Build; {p['upserts_per_s']:.0f} upserts/s)"
        )
        lines.append(
            f"{name:14}{p['offered_items_per_s']:9.0f}{p['achieved_items_per_s']:10.0f}   {extra}"
        )
    lines += [
        "",
        f"  {'stamp -> arrival, ms':30}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>9}{'max':>9}"
        f"{'samples':>11}",
    ]
    for name, p in phases:
        lines.append(_latency_row(f"{name}: every watcher", p["latency"]))
        lines.append(_latency_row(f"{name}: last watcher/item", p["last_watcher"]))
    lines.append(_latency_row("builder: Build stream (bench)", result["builder"]["build_stream"]))
    r = result["ratios"]
    lines.append(
        f"  ratio builder/baseline: p50 {_fmt_ratio(r['p50'])}, p99 {_fmt_ratio(r['p99'])}, "
        f"achieved rate {_fmt_ratio(r['throughput'])}"
    )
    lines.append("")
    for name, p in phases:
        w = p["watchers"]
        lines.append(
            f"{name:10}watchers got {w['samples']:,}/{w['expected_samples']:,} (watcher, item) "
            f"firsts, {w['missing']:,} missing; {w['events_per_s']:,.0f} events/s; their "
            f"loop lag p99 {w['loop_lag']['p99_ms']:.1f} ms"
        )
        bus = p["bus"]
        lines.append(
            f"{'':10}bus: {bus['events_per_s']:,.0f} changes/s, {bus['gaps']:,} out of cursor "
            f"order -> ~{bus['catch_ups_estimated']:,} catch-up reads by watchers"
        )
        status = ", ".join(
            f"{k.removeprefix('EXECUTION_STATUS_')} {v}" for k, v in p["statuses"].items()
        )
        lines.append(
            f"{'':10}executions ended in the phase: {status or 'none'}; "
            f"{p['executions_started']} started from the warm-up to the end of the window"
        )
        if p["stuck_build_streams"]:
            lines.append(
                f"{'':10}{len(p['stuck_build_streams'])} Build stream(s) never said finished "
                "although the execution had ended in the builder's store:"
            )
            lines += [f"{'':12}{d}" for d in p["stuck_build_streams"][:3]]
        if p["errors"] or w["stream_errors"]:
            lines.append(
                f"{'':10}errors {p['errors']} {p['first_error']!r}; watch stream errors "
                f"{w['stream_errors']} {w['first_error']!r}"
            )
    lines.append("")
    lines += _cpu_rows(phases)
    shared = max(p["cpu"]["cores"]["other"] for _, p in phases)
    if shared >= OTHER_LOAD_WARNING:
        lines.append(
            f"  NOTE: other work on this machine used up to {shared:.2f} cores during the "
            "windows; the numbers are pessimistic and vary from run to run."
        )
    t = result["target"]
    verdict = "PASS" if t["pass"] else "MISS"
    lines += [
        "",
        f"target: builder stamp -> watcher p99 <= {t['p99_ms']:g} ms at >= "
        f"{100 * RATE_SUSTAINED:.0f}% of {cfg['rate']:,.0f} items/s, every item to every watcher",
        f"  p99 {t['value_ms']:.2f} ms, rate sustained: {'yes' if t['rate_sustained'] else 'no'}, "
        f"every item seen: {'yes' if t['every_item_seen'] else 'no'}  ->  {verdict}",
    ]
    return "\n".join(lines)
