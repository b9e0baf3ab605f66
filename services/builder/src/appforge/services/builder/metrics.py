"""The builder service's Prometheus metrics, named in one place (served with every RPC's
by `appforge.services.common.metrics.serve_metrics`)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

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
