"""The deployer service's Prometheus metrics, named in one place (served with every RPC's
by `appforge.services.common.metrics.serve_metrics`)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

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
