"""One server's numbers: throughput, latency percentiles, errors, CPU per call."""

from __future__ import annotations

from dataclasses import dataclass

from harness import percentile

from .cpu import CpuSample
from .load import LoadResult


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One server's numbers, as printed."""

    name: str
    calls: int
    errors: int
    error_codes: dict[str, int]
    first_error: str
    elapsed_s: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_ms_per_call: float | None
    postgres_cpu_ms_per_call: float | None
    client_cpu_ms_per_call: float


def measure(name: str, load: LoadResult, before: CpuSample, after: CpuSample) -> Measurement:
    """Summarise one load run and the CPU it cost."""
    latencies = sorted(load.latencies_s)
    calls = max(load.ok, 1)
    server_known = before.server_s >= 0 and after.server_s >= 0
    server_s = after.server_s - before.server_s
    postgres_s = after.postgres_s - before.postgres_s
    return Measurement(
        name=name,
        calls=load.calls,
        errors=load.calls - load.ok,
        error_codes=load.errors,
        first_error=load.first_error,
        elapsed_s=load.elapsed_s,
        calls_per_s=load.ok / load.elapsed_s if load.elapsed_s > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] * 1000) if latencies else 0.0,
        server_cpu_ms_per_call=server_s * 1000 / calls if server_known else None,
        postgres_cpu_ms_per_call=postgres_s * 1000 / calls if postgres_s > 0 else None,
        client_cpu_ms_per_call=(after.client_s - before.client_s) * 1000 / calls,
    )
