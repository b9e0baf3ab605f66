"""The results: as plain data (what `--json` prints) and as the human-readable table, with
the targets marked PASS or MISS."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .ceiling import CEILING_POOL_SIZE
from .config import TARGET_P99_MS, TARGET_RATIO, BenchConfig
from .measurement import Measurement


def report(config: BenchConfig, service: Measurement, ceiling: Measurement) -> dict[str, Any]:
    """The results as plain data (what `--json` prints)."""
    ratio = service.calls_per_s / ceiling.calls_per_s if ceiling.calls_per_s else 0.0
    return {
        "config": {
            "calls": config.calls,
            "executions": config.executions,
            "concurrency": config.concurrency,
            "warmup": config.warmup,
            "apps": config.apps,
            "replay_ratio": config.replay_ratio,
            "seed": config.seed,
            "auth": config.auth,
            "cpus": os.cpu_count(),
            "ceiling_pool_size": CEILING_POOL_SIZE,
        },
        "service": dataclasses.asdict(service),
        "ceiling": dataclasses.asdict(ceiling),
        "ratio": ratio,
        "targets": {
            "ratio": {"target": TARGET_RATIO, "value": ratio, "pass": ratio >= TARGET_RATIO},
            "service_p99_ms": {
                "target": TARGET_P99_MS,
                "value": service.p99_ms,
                "pass": service.p99_ms <= TARGET_P99_MS and service.errors == 0,
            },
        },
    }


def _cpu(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = result["config"]
    lines = [
        f"chat UpsertAssistantMessage: {cfg['calls']:,} calls over {cfg['executions']:,} "
        f"executions, {cfg['concurrency']} in flight, {cfg['apps']} app(s), "
        f"{cfg['cpus']} CPUs" + (", tokens checked (HS256)" if cfg.get("auth") else ""),
        "",
        f"{'':24}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
        f"   CPU ms/call: server / postgres / client",
    ]
    for key, label in (("service", "service (appforge)"), ("ceiling", "ceiling (raw asyncpg)")):
        m = result[key]
        lines.append(
            f"{label:24}{m['calls_per_s']:9.0f}{m['p50_ms']:9.1f}{m['p99_ms']:9.1f}"
            f"{m['max_ms']:9.1f}{m['errors']:8d}   {_cpu(m['server_cpu_ms_per_call'])} / "
            f"{_cpu(m['postgres_cpu_ms_per_call'])} / {_cpu(m['client_cpu_ms_per_call'])}"
        )
        if m["errors"]:
            lines.append(f"{'':24}errors {m['error_codes']}, first: {m['first_error']}")
    lines.append(f"{'ratio service/ceiling':24}{result['ratio']:9.2f}  (throughput)")
    lines.append(
        f"ceiling: one INSERT ... ON CONFLICT per call, asyncpg pool of "
        f"{cfg['ceiling_pool_size']} connections (the most the service's engine opens)"
    )
    lines.append("")
    lines.append("targets")
    for key, label, fmt in (
        ("ratio", f"throughput ratio >= {TARGET_RATIO}", "{:.2f}"),
        ("service_p99_ms", f"service p99 <= {TARGET_P99_MS:g} ms", "{:.1f} ms"),
    ):
        target = result["targets"][key]
        verdict = "PASS" if target["pass"] else "MISS"
        lines.append(f"  {label:28}{fmt.format(target['value']):>10}  {verdict}")
    needed = cfg["concurrency"] / (TARGET_P99_MS / 1000)
    lines.append(
        f"  (closed loop: mean latency = in flight / throughput, so p99 <= {TARGET_P99_MS:g} ms "
        f"with {cfg['concurrency']} in flight needs more than {needed:,.0f} calls/s)"
    )
    return "\n".join(lines)
