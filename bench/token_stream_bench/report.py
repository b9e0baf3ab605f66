"""The results: what was emitted, delivered and how late, CPU per token by process, and
the targets, as plain data (what `--json` prints) and as the human-readable table."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Any

from builder_bench.report import OTHER_LOAD_WARNING

from .builds import BuildTally
from .config import TARGET_P99_MS, StreamConfig
from .tokens import WIDTH
from .window import Window

PROCESSES = ("chat", "builder", "deployer", "postgres", "redis", "watchers", "bench", "other")


def _delivery(
    apps: list[str], window: Window, watched: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """Every token to every watcher of its app: the counts; and the tokens of watched apps."""
    expected = Counter({apps[build]: count for build, count in window.emitted.items()})
    missing = incomplete = 0
    for watcher, app_id in watched["watcher_apps"].items():
        lack = expected[app_id] - watched["per_watcher"].get(watcher, 0)
        missing += max(0, lack)
        incomplete += lack > 0
    watched_apps = set(watched["watcher_apps"].values())
    samples = sum(expected[app_id] for app_id in watched["watcher_apps"].values())
    delivery = {
        "expected_pairs": samples,
        "received_pairs": watched["latency"].count,
        "missing_pairs": missing,
        "incomplete_watchers": incomplete,
        "text_gaps": watched["gaps"],
        "foreign_words": watched["foreign"],
        "stream_errors": watched["errors"],
        "first_error": watched["first_error"],
    }
    return delivery, sum(expected[app_id] for app_id in watched_apps)


def _cpu(window: Window, emitted: int, seconds: float) -> dict[str, Any]:
    """CPU ms per token emitted, and cores, per process; `other`: the rest of the machine."""
    per_token = {k: 1000 * s / max(1, emitted) for k, s in window.cpu_s.items()}
    other_s = window.cpu["cores"]["other"] * seconds
    per_token["other"] = 1000 * other_s / max(1, emitted)
    return {"ms_per_token": per_token, **window.cpu}


def report(
    config: StreamConfig,
    apps: list[str],
    window: Window,
    tally: BuildTally,
    watched: dict[str, Any],
) -> dict[str, Any]:
    """The results as plain data."""
    seconds = max(1e-6, (window.end_us - window.start_us) / 1e6)
    emitted = sum(window.emitted.values())
    emit_s = max(1e-6, (window.last_emit_us - window.start_us) / 1e6)
    delivered = watched["first"].count
    deliver_s = max(1e-6, (watched["last_arrival_us"] - window.start_us) / 1e6)
    delivery, watched_tokens = _delivery(apps, window, watched)
    latency = watched["latency"].summary()
    offered = config.builds * config.tokens
    complete = emitted == offered and delivery["missing_pairs"] == 0 and delivered > 0
    return {
        "config": {
            **{
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(config).items()
                if k != "admin_dsn"
            },
            "apps": len(apps),
            "token_chars": WIDTH + 1,
            "cpus": os.cpu_count(),
        },
        "window_s": seconds,
        "tokens": {
            "offered": offered,
            "emitted": emitted,
            "emitted_per_s": emitted / emit_s,
            "offered_per_s": config.offered_per_s,
            "of_watched_apps": watched_tokens,
            "delivered": delivered,
            "delivered_per_s": delivered / deliver_s,
            "emit_s": emit_s,
            "deliver_s": deliver_s,
        },
        "latency": latency,
        "first_watcher": watched["first"].summary(),
        "last_watcher": watched["last"].summary(),
        "build_stream": tally.latency.summary(),
        "delivery": delivery,
        "watchers": {
            "events_per_s": watched["events"] / seconds,
            "loop_lag": watched["lag"].summary(),
        },
        "builds": {
            "statuses": dict(tally.statuses),
            "errors": dict(tally.errors),
            "first_error": tally.first_error,
            "stream_tokens": window.build_tokens,
            "stream_complete": window.build_stream_complete,
            "text_writes_per_s": window.build_pieces / emit_s,
            "tokens_per_write": window.build_tokens / max(1, window.build_pieces),
        },
        "cpu": _cpu(window, emitted, seconds),
        "targets": {
            "p99": {
                "target_ms": TARGET_P99_MS,
                "value_ms": latency["p99_ms"],
                "pass": latency["count"] > 0 and latency["p99_ms"] <= TARGET_P99_MS,
            },
            "delivery": {"missing_pairs": delivery["missing_pairs"], "pass": complete},
        },
    }


def missed(result: dict[str, Any]) -> bool:
    return not all(target["pass"] for target in result["targets"].values())


def _latency_row(label: str, s: dict[str, float]) -> str:
    return (
        f"  {label:34}{s['p50_ms']:8.2f}{s['p90_ms']:8.2f}{s['p99_ms']:8.2f}"
        f"{s['p999_ms']:9.2f}{s['max_ms']:9.1f}{s['count']:>11,}"
    )


def _cpu_rows(cpu: dict[str, Any], emitted: int) -> list[str]:
    per_token, cores = cpu["ms_per_token"], cpu["cores"]
    return [
        f"CPU in the window, per token emitted ({emitted:,}) and in cores (1.00 = one core; "
        "bench: the endpoint and the Build streams; other: the rest of the machine)",
        f"  {'':12}" + "".join(f"{k:>9}" for k in PROCESSES) + f"{'machine':>9}",
        f"  {'ms/token':12}" + "".join(f"{per_token.get(k, 0.0):9.3f}" for k in PROCESSES),
        f"  {'cores':12}"
        + "".join(f"{cores.get(k, 0.0):9.2f}" for k in PROCESSES)
        + f"{100 * cpu['machine']['busy']:8.0f}%",
        "  event-loop (main) thread busy: "
        + ", ".join(
            f"{k} {100 * cpu['loop_busy'][k]:.0f}%"
            for k in ("chat", "builder", "watchers", "bench")
            if k in cpu["loop_busy"]
        ),
    ]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render_table(result: dict[str, Any]) -> str:
    cfg, t, d, b = result["config"], result["tokens"], result["delivery"], result["builds"]
    lines = [
        f"token_stream: {cfg['builds']} builds, one app each, {cfg['tokens']:,} tokens each at "
        f"{cfg['tokens_per_s']:g} tokens/s ({cfg['token_chars']} characters a token); "
        f"{cfg['watchers']} BASIC WatchApp watchers in {cfg['watcher_procs']} process(es); "
        f"APPFORGE_STREAM_FLUSH_MS {cfg['flush_ms']:g}; {cfg['cpus']} CPUs",
        "",
        f"tokens emitted    {t['emitted']:>9,} of {t['offered']:,}: {t['emitted_per_s']:,.0f}/s "
        f"(offered {t['offered_per_s']:,.0f}/s) over {t['emit_s']:.2f}s",
        f"delivered (>= 1 watcher) {t['delivered']:>9,} of {t['of_watched_apps']:,}: "
        f"{t['delivered_per_s']:,.0f}/s sustained (start -> last delivered {t['deliver_s']:.2f}s)",
        f"builder text writes {b['text_writes_per_s']:,.0f}/s, {b['tokens_per_write']:.1f} tokens "
        f"each; builds ended: {b['statuses'] or 'none'}"
        + (f"; errors {b['errors']} {b['first_error']!r}" if b["errors"] else ""),
        "",
        f"  {'token emitted -> received, ms':34}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>9}"
        f"{'max':>9}{'samples':>11}",
        _latency_row("every (watcher, token)", result["latency"]),
        _latency_row("first watcher of each token", result["first_watcher"]),
        _latency_row("last watcher of each token", result["last_watcher"]),
        _latency_row("Build stream (the builder's part)", result["build_stream"]),
        "",
        f"watchers: {d['received_pairs']:,} of {d['expected_pairs']:,} (watcher, token) pairs, "
        f"{d['missing_pairs']:,} missing ({d['incomplete_watchers']} watchers incomplete); "
        f"{result['watchers']['events_per_s']:,.0f} events/s; loop lag p99 "
        f"{result['watchers']['loop_lag']['p99_ms']:.1f} ms",
        f"  text gaps {d['text_gaps']}, words that are not tokens {d['foreign_words']}, "
        f"stream errors {d['stream_errors']}"
        + (f" (first: {d['first_error']})" if d["first_error"] else ""),
        "",
        *_cpu_rows(result["cpu"], t["emitted"]),
    ]
    other = result["cpu"]["cores"]["other"]
    if other >= OTHER_LOAD_WARNING:
        lines.append(
            f"  NOTE: other work on this machine used {other:.2f} cores in the window; the "
            "numbers are pessimistic and vary from run to run."
        )
    p99, delivery = result["targets"]["p99"], result["targets"]["delivery"]
    lines += [
        "",
        f"target: token emitted -> watcher p99 <= {p99['target_ms']:g} ms: "
        f"{p99['value_ms']:.2f} ms  {_verdict(p99['pass'])}",
        f"target: every token emitted and received by every watcher of its app: "
        f"{t['emitted']:,}/{t['offered']:,} emitted, {delivery['missing_pairs']:,} missing  "
        f"{_verdict(delivery['pass'])}",
    ]
    return "\n".join(lines)
