"""A worker that cannot record an attempt's end (the database went away) keeps working: the
deployment's lease runs out and it is taken over, and the worker claims again."""

from __future__ import annotations

import asyncio

from appforge.services.common.errors import Unavailable
from appforge.services.deployer.domain import AttemptRecorded, DeploymentStatus, WorkerConfig
from appforge.services.deployer.targets.noop import NoopTarget
from appforge.services.deployer.timing import ManualTimer
from appforge.services.deployer.worker import DeploymentWorker
from tests.unit.test_deployer_idle_workers import NOW_US, WAIT, OneQueue


class DownOnce(OneQueue):
    """The first success cannot be recorded: the database is down."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded = 0
        self.second = asyncio.Event()

    async def succeed_and_claim(self, *_: object, **__: object) -> tuple[AttemptRecorded, None]:
        self.recorded += 1
        if self.recorded == 1:
            raise Unavailable("database unavailable while finishing an attempt")
        self.second.set()
        return AttemptRecorded(status=DeploymentStatus.SUCCEEDED), None


async def _ignore(_deployment_id: str) -> None:
    return None


async def test_a_worker_whose_success_was_not_recorded_goes_on_working() -> None:
    store = DownOnce()
    store.due = 2
    timer = ManualTimer(NOW_US)
    worker = DeploymentWorker(
        worker_id="w1",
        store=store,  # type: ignore[arg-type]
        targets={"noop": NoopTarget()},
        clock=timer,
        config=WorkerConfig(poll_interval=1),
        wake=asyncio.Event(),
        on_change=_ignore,
    )
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(WAIT):
            while not store.second.is_set():
                assert not task.done(), task  # the worker must not have died
                await timer.sleeping()  # it backs off on the injected clock
                timer.advance(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert store.recorded == 2
