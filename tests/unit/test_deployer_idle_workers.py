"""Idle workers share one wake-up: a Deploy wakes one claim, not one per idle worker, and
the process asks other replicas for help only when none of its workers is idle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from appforge.services.common import keys
from appforge.services.common.bus import InProcessBus
from appforge.services.common.settings import Settings
from appforge.services.deployer.domain import (
    AttemptRecorded,
    ClaimResult,
    DeploymentStatus,
    NothingDue,
    WorkerConfig,
)
from appforge.services.deployer.service import DeployerService, PolicyOverrides
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.targets.base import ArtifactFile
from appforge.services.deployer.targets.noop import NoopTarget
from appforge.services.deployer.timing import ManualTimer
from appforge.services.deployer.worker import DeploymentWorker, IdleWorkers
from tests.unit.deployer_fakes import claim_for
from tests.unit.test_deployer_noop_target import QueuedDeployments

NOW_US = 1_800_000_000_000_000
WAIT = 10.0  # real seconds any wait below may take


class OneQueue:
    """A store with `due` deployments waiting; counts the claims made."""

    def __init__(self) -> None:
        self.due = 0
        self.claims = 0
        self.claimed = asyncio.Event()

    async def claim(self, worker_id: str, lease: float, now_us: int) -> ClaimResult:
        self.claims += 1
        if not self.due:
            return NothingDue()
        self.due -= 1
        self.claimed.set()
        files = (ArtifactFile(path="index.html", content=b"x", content_type="text/html"),)
        n = self.claims
        return claim_for("noop", now_us, files, deployment_id=f"d-{n}", version=f"v-{n}")

    async def heartbeat(self, *_: object) -> Any:
        raise AssertionError("no attempt lasts a heartbeat here")

    async def succeed_and_claim(self, *_: object, **__: object) -> tuple[AttemptRecorded, None]:
        return AttemptRecorded(status=DeploymentStatus.SUCCEEDED), None


async def _ignore(_deployment_id: str) -> None:
    return None


def _workers(store: OneQueue, wake: asyncio.Event, idle: IdleWorkers | None) -> list[Any]:
    timer = ManualTimer(NOW_US)  # never moved: no poll ever comes due
    return [
        DeploymentWorker(
            worker_id=f"w{n}",
            store=store,  # type: ignore[arg-type]
            targets={"noop": NoopTarget()},
            clock=timer,
            config=WorkerConfig(),
            wake=wake,
            on_change=_ignore,
            idle=idle,
        )
        for n in range(4)
    ]


class CountedWake(asyncio.Event):
    """A wake-up that knows how many wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def wait(self) -> Literal[True]:
        self.waiting += 1
        try:
            return await super().wait()
        finally:
            self.waiting -= 1


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0)  # a turn of the loop, not a wait for time


async def _claims_for_one_deploy(idle: IdleWorkers | None) -> int:
    """How many claims four idle workers make when one deployment is queued and they are
    woken."""
    store, wake = OneQueue(), CountedWake()

    def all_idle() -> bool:  # every worker back to waiting: on the wake-up, or for its turn
        if idle is None:
            return wake.waiting == 4
        return idle.count == 4 and wake.waiting == 1

    tasks = [asyncio.create_task(w.run()) for w in _workers(store, wake, idle)]
    try:
        async with asyncio.timeout(WAIT):
            await _until(all_idle)  # each looked once at start and found nothing
            before = store.claims
            store.due = 1
            wake.set()
            await store.claimed.wait()
            await _until(all_idle)  # whatever the wake-up set off has run out
        return store.claims - before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_wake_up_sets_off_one_claim_and_one_look_for_more() -> None:
    # The claim; the next idle worker's look for more; the first one's, done with it.
    assert await _claims_for_one_deploy(IdleWorkers()) == 3


async def test_without_a_shared_turn_every_idle_worker_claims() -> None:
    # All four idle workers claim at the wake-up; the one that got it looks again after.
    assert await _claims_for_one_deploy(None) == 5


def _service(tmp_path: Path, idle: IdleWorkers, bus: InProcessBus) -> DeployerService:
    deploy = DeploySettings(target="noop", root=tmp_path / "deploys")
    return DeployerService(
        QueuedDeployments(),  # type: ignore[arg-type]
        bus,
        ManualTimer(NOW_US),
        Settings(),
        deploy,
        wake_workers=asyncio.Event(),
        available_targets=["noop"],
        idle_workers=idle,
    )


async def _asked_others(tmp_path: Path, idle_count: int) -> bool:
    """Whether a Deploy woke the other replicas, with `idle_count` workers idle here."""
    bus = InProcessBus()
    idle = IdleWorkers()
    idle.count = idle_count
    service = _service(tmp_path, idle, bus)
    async with bus.subscribe(keys.deployer_jobs_channel()) as jobs:
        await service.deploy(
            app_id="app-1",
            app_version_id="v1",
            execution_id="e-1",
            target="",
            files=[("index.html", b"x", "")],
            policy=PolicyOverrides(),
        )
        assert service.wake_workers.is_set()  # this process's own workers, always
        # The in-process bus delivers as it publishes: whatever was sent is there already.
        return jobs.backlog > 0


async def test_a_deploy_wakes_other_replicas_only_when_no_worker_here_is_idle(
    tmp_path: Path,
) -> None:
    assert await _asked_others(tmp_path, idle_count=0)
    assert not await _asked_others(tmp_path, idle_count=1)
