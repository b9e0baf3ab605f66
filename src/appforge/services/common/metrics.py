"""Every Prometheus metric appforge exports, named in one place, and the HTTP exporter.

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

# chat
ASSISTANT_UPSERTS: Final = Counter(
    "appforge_chat_assistant_upserts", "UpsertAssistantMessage calls that were applied."
)
ASSISTANT_MESSAGES_CREATED: Final = Counter(
    "appforge_chat_assistant_messages_created",
    "Assistant messages created (one per execution: the first upsert creates it).",
)

# builder
DUPLICATE_MESSAGES: Final = Counter(
    "appforge_builder_duplicate_messages",
    "Writes to an execution that chat answered with another message than the execution's "
    "own (a split execution). Must stay 0.",
)
EXECUTIONS: Final = Counter(
    "appforge_builder_executions", "Executions ended, by final status.", ["status"]
)
TOOL_CALLS: Final = Counter(
    "appforge_builder_tool_calls",
    "Tool calls ended by their runner, by tool and status.",
    ["tool", "status"],
)
TOOL_TIMEOUTS_REAPED: Final = Counter(
    "appforge_builder_tool_timeouts_reaped",
    "Tool calls the sweeper moved to timed_out after their deadline.",
)
ABANDONED_EXECUTIONS: Final = Counter(
    "appforge_builder_abandoned_executions",
    "Executions the sweeper failed because their builder stopped heartbeating.",
)

# deployer
DEPLOY_ATTEMPTS: Final = Counter(
    "appforge_deployer_attempts", "Deployment attempts ended, by outcome.", ["outcome"]
)
DEPLOY_RETRIES: Final = Counter(
    "appforge_deployer_retries", "Attempts that failed and were scheduled again."
)
DEPLOY_TIMEOUTS: Final = Counter(
    "appforge_deployer_attempt_timeouts", "Attempts that passed their deadline."
)
DEPLOYMENTS: Final = Counter(
    "appforge_deployer_deployments", "Deployments ended, by final status.", ["status"]
)


def serve_metrics(host: str, port: int) -> None:
    """Serve /metrics on `port` in a background thread (0: do not serve)."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
