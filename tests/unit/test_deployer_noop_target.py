"""The `noop` deploy target: it publishes nothing and succeeds, it is what a Deploy that
names no target gets when the server's default is `noop`, and a worker records its
attempts like any other."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from appforge.api.deployer.v1 import deployer_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.common.bus import InProcessBus
from appforge.services.common.errors import ConfigError
from appforge.services.common.server import Context
from appforge.services.common.settings import Settings
from appforge.services.deployer.bootstrap import build_targets
from appforge.services.deployer.domain import (
    TARGETS,
    AttemptOutcome,
    Deployment,
    DeploymentStatus,
    DeployRequest,
    Enqueued,
    WorkerConfig,
)
from appforge.services.deployer.grpc_api import DeployerServicer
from appforge.services.deployer.service import DeployerService, PolicyOverrides
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.targets.base import ArtifactFile
from appforge.services.deployer.targets.noop import NoopTarget
from appforge.services.deployer.timing import ManualTimer
from appforge.services.deployer.worker import DeploymentWorker
from tests.unit.deployer_fakes import OneDeployment, claim_for

WAIT = 5.0  # bound on every wait; the events come in milliseconds
FILES = (ArtifactFile(path="index.html", content=b"<p>hi</p>", content_type="text/html"),)
NOW_US = 1_700_000_000_000_000


async def test_a_publish_writes_nothing_and_names_the_version(tmp_path: Path) -> None:
    target = NoopTarget()

    publication = await target.publish(app_id="app 1", app_version_id="v/1", files=FILES)

    assert publication.url == "noop://app%201/v%2F1"
    assert target.name == "noop"
    assert list(tmp_path.iterdir()) == []
    await target.close()


def test_the_server_default_may_be_noop() -> None:
    assert "noop" in TARGETS
    assert DeploySettings.from_env({"APPFORGE_DEPLOY_TARGET": "noop"}).target == "noop"


def test_an_unknown_default_names_every_allowed_target() -> None:
    with pytest.raises(ConfigError, match="must be one of local, s3, noop, got 'ftp'"):
        DeploySettings.from_env({"APPFORGE_DEPLOY_TARGET": "ftp"})


def test_every_process_can_publish_to_noop(tmp_path: Path) -> None:
    # Whatever its own default: a replica finishes the noop deployments another one queued.
    targets = build_targets(DeploySettings(root=tmp_path / "deploys"), tmp_path)

    assert set(targets) == {"local", "noop"}
    assert isinstance(targets["noop"], NoopTarget)


class QueuedDeployments:
    """The service's store: records what it is asked to queue, as a fresh deployment."""

    def __init__(self) -> None:
        self.requests: list[DeployRequest] = []

    async def create(self, request: DeployRequest, now_us: int) -> Enqueued:
        self.requests.append(request)
        deployment = Deployment(
            id=f"d-{len(self.requests)}",
            app_id=request.app_id,
            app_version_id=request.app_version_id,
            execution_id=request.execution_id,
            target=request.target,
            status=DeploymentStatus.QUEUED,
            policy=request.policy,
            attempts_made=0,
            next_attempt_us=now_us,
            created_us=now_us,
            updated_us=now_us,
        )
        return Enqueued(deployment=deployment, created=True)


def service_defaulting_to(target: str, store: QueuedDeployments, tmp_path: Path) -> DeployerService:
    deploy = DeploySettings(target=target, root=tmp_path / "deploys")
    return DeployerService(
        store,  # type: ignore[arg-type]
        InProcessBus(),
        ManualTimer(NOW_US),
        Settings(),
        deploy,
        wake_workers=asyncio.Event(),
        available_targets=list(build_targets(deploy, tmp_path)),
    )


async def test_a_deploy_naming_no_target_goes_to_the_noop_default(tmp_path: Path) -> None:
    store = QueuedDeployments()
    service = service_defaulting_to("noop", store, tmp_path)
    request = deployer_pb2.DeployRequest(
        app_id="app-1",
        app_version_id="v1",
        execution_id="e-1",
        files=[flow_pb2.File(path="index.html", content=b"x")],
        target=deployer_pb2.DEPLOY_TARGET_UNSPECIFIED,
    )

    reply = await DeployerServicer(service).Deploy(request, cast(Context, None))

    assert [r.target for r in store.requests] == ["noop"]
    assert service.wake_workers.is_set()
    # The API has no value for noop: the reply leaves the target unspecified.
    assert reply.target == deployer_pb2.DEPLOY_TARGET_UNSPECIFIED


async def test_a_deploy_naming_local_still_goes_to_local(tmp_path: Path) -> None:
    store = QueuedDeployments()
    service = service_defaulting_to("noop", store, tmp_path)

    await service.deploy(
        app_id="app-1",
        app_version_id="v1",
        execution_id="e-1",
        target="local",
        files=[("index.html", b"x", "")],
        policy=PolicyOverrides(),
    )

    assert [r.target for r in store.requests] == ["local"]


async def test_a_worker_records_a_noop_attempt_as_succeeded(tmp_path: Path) -> None:
    store = OneDeployment()
    timer = ManualTimer(NOW_US)  # never moved: the deadline cannot interfere
    changes: list[str] = []

    async def on_change(deployment_id: str) -> None:
        changes.append(deployment_id)

    worker = DeploymentWorker(
        worker_id="w1",
        store=store,  # type: ignore[arg-type]
        targets=build_targets(DeploySettings(root=tmp_path / "deploys"), tmp_path),
        clock=timer,
        config=WorkerConfig(),
        wake=asyncio.Event(),
        on_change=on_change,
    )
    claim = claim_for("noop", NOW_US, FILES)

    await asyncio.wait_for(worker.attempt(claim), WAIT)

    assert store.finished == [(AttemptOutcome.SUCCEEDED, "", "noop://app-1/v1")]
    assert changes == ["d-1", "d-1"]  # started, then ended
    assert not (tmp_path / "deploys").exists()
