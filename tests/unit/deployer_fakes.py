"""What the deployer's worker tests share: a claim as the store hands it out, and a store
for one claimed deployment."""

from __future__ import annotations

from appforge.services.deployer.domain import (
    AttemptOutcome,
    AttemptRecorded,
    Claim,
    Deployment,
    DeploymentStatus,
    LeaseState,
    Policy,
)
from appforge.services.deployer.targets.base import ArtifactFile


def claim_for(
    target: str,
    now_us: int,
    files: tuple[ArtifactFile, ...],
    *,
    deployment_id: str = "d-1",
    version: str = "v1",
    worker_id: str = "w1",
) -> Claim:
    """`worker_id`'s first attempt at a deployment of app-1 to `target`, started `now_us`."""
    deployment = Deployment(
        id=deployment_id,
        app_id="app-1",
        app_version_id=version,
        execution_id="e-1",
        target=target,
        status=DeploymentStatus.RUNNING,
        policy=Policy(),
        attempts_made=1,
        next_attempt_us=now_us,
        created_us=now_us,
        updated_us=now_us,
        lease_owner=worker_id,
    )
    return Claim(deployment=deployment, attempt=1, deadline_us=now_us + 300_000_000, files=files)


class OneDeployment:
    """The worker's store, for one claimed deployment: a lease always held, and the
    attempt's end as the worker recorded it."""

    def __init__(self) -> None:
        self.finished: list[tuple[AttemptOutcome, str, str]] = []

    async def heartbeat(self, *_: object) -> LeaseState:
        return LeaseState.HELD

    async def succeed_and_claim(
        self, claim: Claim, worker_id: str, *, url: str, **_: object
    ) -> tuple[AttemptRecorded, None]:
        self.finished.append((AttemptOutcome.SUCCEEDED, "", url))
        return AttemptRecorded(status=DeploymentStatus.SUCCEEDED), None

    async def finish_attempt(
        self,
        claim: Claim,
        worker_id: str,
        *,
        outcome: AttemptOutcome,
        error: str,
        url: str,
        **_: object,
    ) -> AttemptRecorded:
        self.finished.append((outcome, error, url))
        succeeded = outcome is AttemptOutcome.SUCCEEDED
        return AttemptRecorded(
            status=DeploymentStatus.SUCCEEDED if succeeded else DeploymentStatus.FAILED
        )
