"""The results: as plain data (what `--json` prints) and as the human-readable report, with
the targets marked PASS or MISS (or n/a: they are set for the BASIC view)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from harness import percentile

from appforge.api.chat.v1 import chat_pb2

from .check import differences, wire
from .config import TARGET_BYTES_RATIO, TARGET_LATENCY_RATIO, TARGET_VIEW, GrowthConfig
from .cpu import cpu_ms_per_call, machine_use
from .measure import Growth


def _latency(values: Sequence[float | None], first: int, last: int) -> dict[str, Any]:
    """p50/p99/max (ms) of calls first+1 .. last (numbered from 1 in the report)."""
    done = sorted(v for v in values[first:last] if v is not None)
    return {
        "calls": f"{first + 1}-{last}",
        "ok": len(done),
        "p50_ms": percentile(done, 0.50) * 1000,
        "p99_ms": percentile(done, 0.99) * 1000,
        "max_ms": done[-1] * 1000 if done else 0.0,
    }


def _slowest(values: Sequence[float | None], count: int = 3) -> list[dict[str, Any]]:
    """The slowest calls: which (numbered from 1) and how long, in ms."""
    timed = sorted(((v, n) for n, v in enumerate(values, 1) if v is not None), reverse=True)[:count]
    return [{"call": n, "ms": v * 1000} for v, n in timed]


def _trace_window(trace: Sequence[Sequence[int]], low: int, high: int) -> dict[str, float]:
    """Mean bytes and parse+apply µs of the watcher's events of versions low..high."""
    inside = [(size, ns) for version, size, ns in trace if low <= version <= high]
    n = max(1, len(inside))
    return {
        "events": len(inside),
        "bytes_per_event": sum(size for size, _ in inside) / n,
        "apply_us_per_event": sum(ns for _, ns in inside) / n / 1000,
    }


def report(config: GrowthConfig, growth: Growth, final: chat_pb2.ChatMessage) -> dict[str, Any]:
    """The results as plain data (what `--json` prints)."""
    items = len(growth.latencies_s)
    window = min(config.window, items)
    early = _latency(growth.latencies_s, 0, window)
    late = _latency(growth.latencies_s, items - window, items)
    ratio = late["p50_ms"] / early["p50_ms"] if early["p50_ms"] else 0.0
    blocks = [
        _latency(growth.latencies_s, start, min(start + window, items))
        for start in range(0, items, window)
    ]
    watched = dict(growth.watched)
    mismatch = differences(watched.pop("message"), final) if watched["caught_up"] else []
    trace = watched.pop("trace")
    final_bytes = len(wire(final))
    bytes_ratio = watched["bytes"] / final_bytes if final_bytes else 0.0
    errors = sum(growth.errors.values())
    judged = config.view == TARGET_VIEW
    identical = watched["caught_up"] and not mismatch
    s = growth.samples
    replies = [b for b in growth.reply_bytes if b]
    return {
        "config": {
            "items": items,
            "item_bytes": config.item_bytes,
            "window": window,
            "tools_every": config.tools_every,
            "warmup": config.warmup,
            "view": config.view,
            "cpus": os.cpu_count(),
        },
        "calls": {
            "errors": errors,
            "error_codes": growth.errors,
            "first_error": growth.first_error,
            "elapsed_s": growth.elapsed_s,
            "early": early,
            "late": late,
            "all": _latency(growth.latencies_s, 0, items),
            "p50_ratio": ratio,
            "p50_by_block_ms": [block["p50_ms"] for block in blocks],
            "slowest": _slowest(growth.latencies_s),
            "reply_bytes": {
                "first": replies[0] if replies else 0,
                "last": replies[-1] if replies else 0,
                "max": max(replies, default=0),
            },
        },
        "final": {
            "bytes": final_bytes,
            "items": len(final.flow),
            "version": final.version,
            "content_chars": len(final.content),
        },
        "watcher": {
            **watched,
            "bytes_ratio": bytes_ratio,
            "identical": identical,
            "differences": mismatch,
            "early": _trace_window(trace, 1, window),
            "late": _trace_window(trace, items - window + 1, items),
        },
        "memory_mb": growth.memory_mb,
        "machine": machine_use(s["start"], s["end"]),
        "cpu_ms_per_call": {
            "early": cpu_ms_per_call(s["start"], s["early"], window),
            "late": cpu_ms_per_call(s["late_start"], s["end"], window),
            "all": cpu_ms_per_call(s["start"], s["caught_up"], items),
        },
        # The watcher holds what chat serves (a failed call is an error, not a wrong state).
        "correct": identical,
        "targets": {
            "p50_ratio": {
                "target": TARGET_LATENCY_RATIO,
                "value": ratio,
                "judged": judged,
                "pass": ratio <= TARGET_LATENCY_RATIO and errors == 0,
            },
            "bytes_ratio": {
                "target": TARGET_BYTES_RATIO,
                "value": bytes_ratio,
                "judged": judged,
                "pass": bytes_ratio <= TARGET_BYTES_RATIO and identical,
            },
        },
    }


def missed(result: dict[str, Any]) -> bool:
    """Whether a target that applies to this run was missed."""
    return any(t["judged"] and not t["pass"] for t in result["targets"].values())


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mb(values: dict[str, float], key: str) -> str:
    return f"{values[key]:.0f}" if key in values else "n/a"


def _calls_lines(result: dict[str, Any]) -> list[str]:
    calls, cfg = result["calls"], result["config"]
    lines = [f"{'UpsertAssistantMessage':26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'ok':>7}"]
    for key in ("early", "late", "all"):
        w = calls[key]
        lines.append(
            f"  calls {w['calls']:18}{w['p50_ms']:9.2f}{w['p99_ms']:9.2f}{w['max_ms']:9.2f}"
            f"{w['ok']:7d}"
        )
    lines.append(f"  ratio p50 late/early {calls['p50_ratio']:13.2f}")
    blocks = calls["p50_by_block_ms"]
    step = max(1, len(blocks) // 8)
    shown = sorted({*range(0, len(blocks), step), len(blocks) - 1})
    curve = "  ".join(f"{n * cfg['window'] + 1}: {blocks[n]:.2f}" for n in shown if n < len(blocks))
    lines.append(f"  p50 ms by block of {cfg['window']} calls, from call  {curve}")
    slowest = ", ".join(f"call {c['call']} {c['ms']:.1f} ms" for c in calls["slowest"])
    lines.append(f"  slowest: {slowest}")
    replies = calls["reply_bytes"]
    lines.append(
        f"  reply bytes: first {replies['first']}, last {replies['last']}, max {replies['max']}; "
        f"{calls['elapsed_s']:.1f} s for the calls"
    )
    if calls["errors"]:
        lines.append(f"  errors {calls['error_codes']}, first: {calls['first_error']}")
    return lines


def _watcher_lines(result: dict[str, Any]) -> list[str]:
    w, final, cfg = result["watcher"], result["final"], result["config"]
    lines = [
        f"final message (GetMessageByExecution): {final['bytes']:,} bytes, {final['items']:,} "
        f"items, version {final['version']:,}",
    ]
    if final["items"] != cfg["items"]:
        lines.append(f"  ERROR: {cfg['items']:,} items were sent")
    lines += [
        f"watcher ({cfg['view'].upper()}): {w['events']:,} events ({w['snapshots']} snapshots, "
        f"{w['snapshot_bytes']:,} bytes of them), {w['bytes']:,} bytes in all = "
        f"{w['bytes_ratio']:.2f} x the final message; largest event {w['max_event_bytes']:,}",
        f"  per event, calls {result['calls']['early']['calls']}: "
        f"{w['early']['bytes_per_event']:,.0f} bytes, {w['early']['apply_us_per_event']:.0f} µs "
        f"to parse and apply; calls {result['calls']['late']['calls']}: "
        f"{w['late']['bytes_per_event']:,.0f} bytes, {w['late']['apply_us_per_event']:.0f} µs",
    ]
    if not w["caught_up"]:
        lines.append(f"  ERROR: the watcher did not reach version {final['version']} in time")
    elif w["identical"]:
        lines.append("  its message is byte-identical to GetMessageByExecution's")
    else:
        lines.append("  ERROR: its message differs from GetMessageByExecution's:")
        lines += [f"    {d}" for d in w["differences"]]
    if w["errors"]:
        lines.append(f"  stream errors {w['errors']}, first: {w['first_error']}")
    return lines


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = result["config"]
    tools = f", a tools item every {cfg['tools_every']}" if cfg["tools_every"] else ""
    lines = [
        f"chat growth: {cfg['items']:,} upserts of one execution, each one new "
        f"{cfg['item_bytes']}-byte item{tools}; one {cfg['view'].upper()} watcher; "
        f"{cfg['warmup']} warm-up calls first; {cfg['cpus']} CPUs",
        "",
        *_calls_lines(result),
        "",
        *_watcher_lines(result),
        "",
        f"{'CPU ms/call':26}{'chat':>9}{'postgres':>9}{'watcher':>9}{'client':>9}",
    ]
    for key, label in (("early", "early window"), ("late", "late window"), ("all", "all")):
        cpu = result["cpu_ms_per_call"][key]
        lines.append(
            f"  {label:24}{_ms(cpu['chat']):>9}{_ms(cpu['postgres']):>9}"
            f"{_ms(cpu['watcher']):>9}{_ms(cpu['client']):>9}"
        )
    lines.append(
        "  (postgres: the backends of the bench database; all: until the watcher caught up)"
    )
    machine = result["machine"]
    lines.append(
        f"machine during the calls: {100 * machine['busy']:.0f}% busy, of which "
        f"{100 * machine['other']:.0f}% not by chat, its backends, the watcher or this client; "
        f"steal {100 * machine['steal']:.0f}%"
    )
    memory = result["memory_mb"]
    lines.append(
        f"memory MiB: chat resident {_mb(memory['chat_before'], 'rss')} before the calls, "
        f"{_mb(memory['chat_after'], 'rss')} after (peak {_mb(memory['chat_after'], 'peak')}); "
        f"watcher peak {_mb(memory['watcher'], 'peak')}"
    )
    lines.append("")
    lines.append(f"targets (set for --view {TARGET_VIEW})")
    for key, label, unit in (
        ("p50_ratio", f"p50 late/early <= {TARGET_LATENCY_RATIO:g}", ", no errors"),
        ("bytes_ratio", f"watcher bytes/final <= {TARGET_BYTES_RATIO:g}", ", identical"),
    ):
        target = result["targets"][key]
        verdict = ("PASS" if target["pass"] else "MISS") if target["judged"] else "n/a"
        lines.append(f"  {label + unit:40}{target['value']:>10.2f}  {verdict}")
    return "\n".join(lines)
