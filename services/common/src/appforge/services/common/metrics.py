"""The metrics every appforge server exports (its RPCs), and the HTTP exporter.

Each service names its own metrics in its `metrics.py`.

Each service process serves them on its metrics port (`--metrics-port`,
`APPFORGE_METRICS_PORT`; 0 turns the exporter off). `appforge up` serves all three
services' metrics on one port.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram, start_http_server

RPCS: Final = Counter(
    "appforge_rpcs",
    "gRPC calls served, by method and status code.",
    ["method", "code"],
)
RPC_SECONDS: Final = Histogram(
    "appforge_rpc_seconds",
    "Time to serve a unary gRPC call, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def serve_metrics(host: str, port: int) -> None:
    """Serve /metrics on `port` in a background thread (0: do not serve)."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
