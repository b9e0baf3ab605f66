"""The DeployerService servicer: protobuf <-> domain. Nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import duration_pb2, timestamp_pb2

from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.services.common.errors import InvalidArgument
from appforge.services.common.proto import timestamp
from appforge.services.common.server import Context
from appforge.services.deployer.domain import Deployment, Policy
from appforge.services.deployer.service import DeployerService, PolicyOverrides

SERVICE_NAME = deployer_pb2.DESCRIPTOR.services_by_name["DeployerService"].full_name

_TARGET_NAMES = {
    deployer_pb2.DEPLOY_TARGET_UNSPECIFIED: "",
    deployer_pb2.DEPLOY_TARGET_LOCAL: "local",
    deployer_pb2.DEPLOY_TARGET_S3: "s3",
}
_TARGET_ENUMS = {v: k for k, v in _TARGET_NAMES.items() if v}


def _ts(us: int | None) -> timestamp_pb2.Timestamp | None:
    return None if us is None else timestamp(us)


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    out = duration_pb2.Duration()
    out.FromMicroseconds(round(seconds * 1_000_000))
    return out


def _seconds(request: deployer_pb2.DeployRequest, name: str) -> float | None:
    if not request.policy.HasField(name):  # type: ignore[arg-type]
        return None
    value: duration_pb2.Duration = getattr(request.policy, name)
    seconds = value.ToMicroseconds() / 1_000_000
    if seconds <= 0:
        raise InvalidArgument("must be positive", field=f"policy.{name}")
    return seconds


def policy_to_proto(policy: Policy) -> deployer_pb2.DeploymentPolicy:
    return deployer_pb2.DeploymentPolicy(
        attempt_timeout=_duration(policy.attempt_timeout),
        max_attempts=policy.max_attempts,
        initial_backoff=_duration(policy.initial_backoff),
        max_backoff=_duration(policy.max_backoff),
        overall_deadline=_duration(policy.overall_deadline),
    )


def deployment_to_proto(deployment: Deployment) -> deployer_pb2.Deployment:
    waiting = not deployment.status.terminal and deployment.lease_owner is None
    return deployer_pb2.Deployment(
        id=deployment.id,
        app_id=deployment.app_id,
        app_version_id=deployment.app_version_id,
        execution_id=deployment.execution_id,
        status=int(deployment.status),  # type: ignore[arg-type]
        attempts=[
            deployer_pb2.Attempt(
                number=a.number,
                started_at=_ts(a.started_us),
                finished_at=_ts(a.finished_us),
                outcome=int(a.outcome),  # type: ignore[arg-type]
                error=a.error,
                worker_id=a.worker_id,
            )
            for a in deployment.attempts
        ],
        next_attempt_at=_ts(deployment.next_attempt_us) if waiting else None,
        url=deployment.url,
        target=_TARGET_ENUMS.get(deployment.target, deployer_pb2.DEPLOY_TARGET_UNSPECIFIED),
        policy=policy_to_proto(deployment.policy),
        error=deployment.error,
        created_at=_ts(deployment.created_us),
        updated_at=_ts(deployment.updated_us),
        finished_at=_ts(deployment.finished_us),
    )


class DeployerServicer(deployer_pb2_grpc.DeployerServiceServicer):
    """gRPC face of `DeployerService`; errors are mapped by the server's interceptor."""

    def __init__(self, service: DeployerService) -> None:
        self.service = service

    async def Deploy(
        self, request: deployer_pb2.DeployRequest, context: Context
    ) -> deployer_pb2.Deployment:
        if request.target not in _TARGET_NAMES:
            raise InvalidArgument(f"unknown target {request.target}", field="target")
        if request.policy.max_attempts < 0:
            raise InvalidArgument("must not be negative", field="policy.max_attempts")
        overrides = PolicyOverrides(
            attempt_timeout=_seconds(request, "attempt_timeout"),
            max_attempts=request.policy.max_attempts or None,
            initial_backoff=_seconds(request, "initial_backoff"),
            max_backoff=_seconds(request, "max_backoff"),
            overall_deadline=_seconds(request, "overall_deadline"),
        )
        deployment = await self.service.deploy(
            app_id=request.app_id,
            app_version_id=request.app_version_id,
            execution_id=request.execution_id,
            target=_TARGET_NAMES[request.target],
            files=[(f.path, f.content, f.content_type) for f in request.files],
            policy=overrides,
        )
        return deployment_to_proto(deployment)

    async def GetDeployment(
        self, request: deployer_pb2.GetDeploymentRequest, context: Context
    ) -> deployer_pb2.Deployment:
        return deployment_to_proto(await self.service.get(request.deployment_id))

    async def WatchDeployment(
        self, request: deployer_pb2.WatchDeploymentRequest, context: Context
    ) -> AsyncIterator[deployer_pb2.Deployment]:
        async for deployment in self.service.watch(request.deployment_id):
            yield deployment_to_proto(deployment)

    async def CancelDeployment(
        self, request: deployer_pb2.CancelDeploymentRequest, context: Context
    ) -> deployer_pb2.Deployment:
        return deployment_to_proto(await self.service.cancel(request.deployment_id, request.reason))
