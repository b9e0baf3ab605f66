"""Durable deployment jobs: retries, deadlines, permanent errors, leases, cancel, outbox.

A scripted target stands in for the real ones (tested on their own). Time is a ManualTimer
that moves only when every worker waits on it, so deadlines, backoff and leases are
deterministic and nothing waits for real seconds to pass; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from appforge.cli import installed
from appforge.services.common import db, migrate
from appforge.services.common.clock import SystemClock
from appforge.services.deployer.deliverer import NoticeDeliverer
from appforge.services.deployer.domain import (
    AttemptOutcome,
    AttemptRecorded,
    Claim,
    Deployment,
    DeploymentStatus,
    DeployRequest,
    LeaseLost,
    PendingNotice,
    Policy,
    WorkerConfig,
)
from appforge.services.deployer.store import DeployerStores
from appforge.services.deployer.tables import deployments
from appforge.services.deployer.targets.base import ArtifactFile, Publication, PublishError
from appforge.services.deployer.timing import ManualTimer
from appforge.services.deployer.worker import DeploymentWorker

# Seconds on the test's ManualTimer, not real ones: the clock moves only when a test moves it.
FAST = Policy(attempt_timeout=10, max_attempts=4, initial_backoff=1, max_backoff=5)
CONFIG = WorkerConfig(lease=30, poll_interval=1)
STEP = 5.0  # how far the clock moves each time everyone waits on it
BOUND = 20.0  # real seconds any test may take to get where it is going
LONG_AGO_US = 1_000_000_000_000_000  # 2001: before any deployment another test queued


class ScriptedTarget:
    """Does what its script says, one step per publish call; 'ok' once the script ends."""

    name = "local"

    def __init__(self, *steps: str) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.published: list[str] = []

    async def publish(
        self, *, app_id: str, app_version_id: str, files: Sequence[ArtifactFile]
    ) -> Publication:
        step = self.steps[self.calls] if self.calls < len(self.steps) else "ok"
        self.calls += 1
        if step == "retryable":
            raise PublishError("upstream 503", retryable=True)
        if step == "permanent":
            raise PublishError("403 AccessDenied", retryable=False)
        if step == "hang":
            await asyncio.Event().wait()
        self.published.append(app_version_id)
        return Publication(url=f"http://deploy.test/apps/{app_id}/")

    async def close(self) -> None:
        return None


class RecordingChat:
    """A chat that is down until told otherwise, and records what it acknowledged."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.received: list[dict[str, Any]] = []

    async def notify(
        self, *, app_id: str, execution_id: str, failed: bool, metadata: Mapping[str, Any]
    ) -> None:
        if not self.up:
            raise ConnectionError("chat is down")
        self.received.append({"execution_id": execution_id, "failed": failed, **metadata})


@pytest_asyncio.fixture
async def stores(
    backend: tuple[str, str, str | None], tmp_path: Path
) -> AsyncIterator[DeployerStores]:
    engine = db.create_engine(backend[1])
    await migrate.upgrade(engine, installed.histories())
    stores = DeployerStores.over(engine)
    yield stores
    await stores.close()
    await engine.dispose()


@pytest.fixture
def timer() -> ManualTimer:
    # From the wall clock's now: the suite's database (and outbox) is shared between tests.
    return ManualTimer(SystemClock().now_us())


def _request(policy: Policy = FAST, version: str | None = None) -> DeployRequest:
    return DeployRequest(
        app_id="app-1",
        app_version_id=version or str(uuid.uuid4()),
        execution_id=str(uuid.uuid4()),
        target="local",
        policy=policy,
        files=(("index.html", b"<html></html>", "text/html"),),
    )


async def _ignore(_deployment_id: str) -> None:
    return None


def _worker(
    stores: DeployerStores, timer: ManualTimer, target: ScriptedTarget, name: str = "w1"
) -> DeploymentWorker:
    return DeploymentWorker(
        worker_id=name,
        store=stores.attempts,
        targets={"local": target},
        clock=timer,
        config=CONFIG,
        wake=asyncio.Event(),
        on_change=_ignore,
    )


async def _drive(
    stores: DeployerStores,
    timer: ManualTimer,
    deployment_id: str,
    done: Callable[[Deployment], bool],
) -> Deployment:
    """The deployment once `done` holds; until then the clock moves STEP on each time
    someone waits on it (a deadline, a heartbeat, an idle poll)."""
    async with asyncio.timeout(BOUND):
        while True:
            deployment = await stores.deployments.get(deployment_id)
            if done(deployment):
                return deployment
            await timer.sleeping()
            timer.advance(STEP)


@contextlib.asynccontextmanager
async def _running(*workers: DeploymentWorker) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until_terminal(
    stores: DeployerStores, timer: ManualTimer, deployment_id: str, *workers: DeploymentWorker
) -> Deployment:
    async with _running(*workers):
        return await _drive(stores, timer, deployment_id, lambda d: d.status.terminal)


async def _notice(
    stores: DeployerStores, timer: ManualTimer, chat: RecordingChat, deployment_id: str
) -> dict[str, Any]:
    """The notice chat receives for one deployment (other tests' notices share the outbox)."""
    deliverer = NoticeDeliverer(
        outbox=stores.outbox, chat=chat, clock=timer, poll_interval=1, wake=asyncio.Event()
    )
    async with asyncio.timeout(BOUND):
        while not (mine := [n for n in chat.received if n["deployment_id"] == deployment_id]):
            if not await deliverer.deliver_due():
                timer.advance(STEP)  # nothing was due yet: a retry's delay has to pass
    return mine[-1]


async def test_two_retryable_failures_then_success(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    target = ScriptedTarget("retryable", "retryable")
    queued = await stores.deployments.create(_request(), timer.now_us())
    deployment = queued.deployment
    assert queued.created and deployment.status is DeploymentStatus.QUEUED
    done = await _until_terminal(stores, timer, deployment.id, _worker(stores, timer, target))
    assert done.status is DeploymentStatus.SUCCEEDED
    assert [a.outcome for a in done.attempts] == [
        AttemptOutcome.FAILED_RETRYABLE,
        AttemptOutcome.FAILED_RETRYABLE,
        AttemptOutcome.SUCCEEDED,
    ]
    assert done.url.endswith("/apps/app-1/") and target.published == [deployment.app_version_id]
    notice = await _notice(stores, timer, RecordingChat(), deployment.id)
    assert notice == {
        "execution_id": deployment.execution_id,
        "failed": False,
        "deployment_id": deployment.id,
        "attempts": 3,
        "deployment_status": "deployed",
        "url": done.url,
    }


async def test_every_attempt_hangs_ends_timed_out_after_max_attempts(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    target = ScriptedTarget("hang", "hang", "hang", "hang")
    policy = Policy(attempt_timeout=10, max_attempts=3, initial_backoff=1, max_backoff=2)
    deployment = (await stores.deployments.create(_request(policy), timer.now_us())).deployment
    done = await _until_terminal(stores, timer, deployment.id, _worker(stores, timer, target))
    assert done.status is DeploymentStatus.TIMED_OUT
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.TIMED_OUT] * 3
    assert [a.error for a in done.attempts] == ["attempt timed out after 10s"] * 3
    # Each attempt ran until the clock passed its deadline, and no further.
    for attempt in done.attempts:
        assert attempt.finished_us is not None
        assert 10_000_000 <= attempt.finished_us - attempt.started_us < 10_000_000 + STEP * 1e6
    assert target.calls == 3
    notice = await _notice(stores, timer, RecordingChat(), deployment.id)
    assert notice["failed"] is True
    assert notice["error"] == "Deployment timeout"
    assert notice["deployment_status"] == "timeout"
    assert notice["attempts"] == 3


async def test_an_attempt_times_out_at_its_deadline_not_before(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    target = ScriptedTarget("hang")
    policy = Policy(attempt_timeout=10, max_attempts=1, initial_backoff=1, max_backoff=1)
    deployment = (await stores.deployments.create(_request(policy), timer.now_us())).deployment
    changed = asyncio.Event()
    worker = _worker(stores, timer, target)

    async def on_change(_deployment_id: str) -> None:
        changed.set()

    worker.on_change = on_change
    async with _running(worker):
        running = await _drive(
            stores, timer, deployment.id, lambda d: d.status is DeploymentStatus.RUNNING
        )
        deadline_us = running.attempts[0].started_us + 10_000_000
        async with asyncio.timeout(BOUND):
            await timer.sleeping(deadline_us)  # the worker waits for its attempt's deadline
        timer.set(deadline_us - 1)
        assert timer.next_deadline_us == deadline_us  # a microsecond early: still waiting
        changed.clear()
        timer.set(deadline_us)
        async with asyncio.timeout(BOUND):
            await changed.wait()  # the worker reports the attempt's end
    done = await stores.deployments.get(deployment.id)
    assert done.status is DeploymentStatus.TIMED_OUT
    assert [(a.outcome, a.finished_us) for a in done.attempts] == [
        (AttemptOutcome.TIMED_OUT, deadline_us)
    ]


async def test_a_permanent_error_fails_after_one_attempt(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    target = ScriptedTarget("permanent")
    deployment = (await stores.deployments.create(_request(), timer.now_us())).deployment
    done = await _until_terminal(stores, timer, deployment.id, _worker(stores, timer, target))
    assert done.status is DeploymentStatus.FAILED
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.FAILED_PERMANENT]
    assert "403 AccessDenied" in done.error


async def test_deploying_one_version_twice_is_one_deployment(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    request = _request()
    first = await stores.deployments.create(request, timer.now_us())
    again = await stores.deployments.create(request, timer.now_us())
    assert first.created and not again.created and again.deployment.id == first.deployment.id
    target = ScriptedTarget()
    await _until_terminal(stores, timer, first.deployment.id, _worker(stores, timer, target))
    assert target.published == [request.app_version_id]


async def test_a_dead_workers_lease_expires_and_another_finishes(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    deployment = (await stores.deployments.create(_request(), timer.now_us())).deployment
    claim = await stores.attempts.claim("dead-worker", CONFIG.lease, timer.now_us())
    assert isinstance(claim, Claim) and claim.deployment.id == deployment.id
    # The dead worker never heartbeats; once its lease expires a live one takes over.
    target = ScriptedTarget()
    live = _worker(stores, timer, target, "live")
    done = await _until_terminal(stores, timer, deployment.id, live)
    assert done.status is DeploymentStatus.SUCCEEDED
    assert [(a.worker_id, a.outcome) for a in done.attempts] == [
        ("dead-worker", AttemptOutcome.LOST),
        ("live", AttemptOutcome.SUCCEEDED),
    ]
    # Not before the lease ran out: the lost attempt ended after `lease` seconds.
    lost = done.attempts[0]
    assert lost.finished_us is not None and lost.finished_us - lost.started_us > CONFIG.lease * 1e6
    assert target.published == [deployment.app_version_id]
    # The dead worker's late result is discarded: the lease is no longer its own.
    late = await stores.attempts.finish_attempt(
        claim,
        "dead-worker",
        outcome=AttemptOutcome.FAILED_PERMANENT,
        error="late",
        url="",
        now_us=timer.now_us(),
    )
    assert late == LeaseLost(deployment_id=deployment.id)
    assert (await stores.deployments.get(deployment.id)).status is DeploymentStatus.SUCCEEDED


async def test_cancel_stops_a_running_attempt(stores: DeployerStores, timer: ManualTimer) -> None:
    target = ScriptedTarget("hang")
    policy = Policy(attempt_timeout=300, max_attempts=4, initial_backoff=1, max_backoff=5)
    deployment = (await stores.deployments.create(_request(policy), timer.now_us())).deployment
    async with _running(_worker(stores, timer, target)):
        await _drive(stores, timer, deployment.id, lambda d: d.status is DeploymentStatus.RUNNING)
        await stores.deployments.cancel(deployment.id, "user asked", timer.now_us())
        done = await _drive(stores, timer, deployment.id, lambda d: d.status.terminal)
    assert done.status is DeploymentStatus.CANCELLED
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.CANCELLED]
    # Stopped by a heartbeat, long before the attempt's own deadline.
    assert done.attempts[0].finished_us is not None
    assert done.attempts[0].finished_us - done.attempts[0].started_us < policy.attempt_timeout * 1e6


async def test_cancel_of_a_waiting_deployment_is_immediate(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    deployment = (await stores.deployments.create(_request(), timer.now_us())).deployment
    cancelled = await stores.deployments.cancel(deployment.id, "", timer.now_us())
    assert cancelled.status is DeploymentStatus.CANCELLED and cancelled.attempts == ()
    notice = await _notice(stores, timer, RecordingChat(), deployment.id)
    assert notice["deployment_status"] == "cancelled"


async def test_a_notice_waits_for_chat_to_come_back(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    deployment = (await stores.deployments.create(_request(), timer.now_us())).deployment
    await _until_terminal(stores, timer, deployment.id, _worker(stores, timer, ScriptedTarget()))
    chat = RecordingChat(up=False)
    deliverer = NoticeDeliverer(
        outbox=stores.outbox, chat=chat, clock=timer, poll_interval=1, wake=asyncio.Event()
    )
    await deliverer.deliver_due()  # chat is down: nothing delivered, nothing lost
    assert chat.received == []
    chat.up = True
    notice = await _notice(stores, timer, chat, deployment.id)
    assert notice["deployment_id"] == deployment.id
    assert len([n for n in chat.received if n["deployment_id"] == deployment.id]) == 1


async def _head_claimed(
    stores: DeployerStores, now_us: int, queued: int = 1
) -> tuple[Claim, list[Deployment]]:
    """`queued` new deployments due long before anything else in the queue (so, in order,
    its head), and worker w1's claim of the first."""
    heads = [
        (await stores.deployments.create(_request(), LONG_AGO_US + n)).deployment
        for n in range(queued)
    ]
    claim = await stores.attempts.claim("w1", CONFIG.lease, now_us)
    assert isinstance(claim, Claim) and claim.deployment.id == heads[0].id
    return claim, heads


async def _succeeded_held(
    stores: DeployerStores, claim: Claim, now_us: int, url: str = "u"
) -> AttemptRecorded:
    """w1's success of `claim`, its notice held 30 s for w1's process."""
    recorded = await stores.attempts.finish_attempt(
        claim,
        "w1",
        outcome=AttemptOutcome.SUCCEEDED,
        error="",
        url=url,
        now_us=now_us,
        hold_notice=30,
    )
    assert isinstance(recorded, AttemptRecorded)
    return recorded


async def test_recording_a_success_claims_the_next_deployment_in_the_same_step(
    stores: DeployerStores, timer: ManualTimer, backend: tuple[str, str, str | None]
) -> None:
    now_us = timer.now_us()
    claim, (first, second) = await _head_claimed(stores, now_us, queued=2)
    assert claim.files == (
        ArtifactFile(path="index.html", content=b"<html></html>", content_type="text/html"),
    )

    recorded, chained = await stores.attempts.succeed_and_claim(
        claim, "w1", url="http://deploy.test/apps/app-1/", lease=CONFIG.lease, now_us=now_us
    )

    assert recorded == AttemptRecorded(status=DeploymentStatus.SUCCEEDED)
    done = await stores.deployments.get(first.id)
    assert (done.status, done.url) == (DeploymentStatus.SUCCEEDED, "http://deploy.test/apps/app-1/")
    assert [(a.outcome, a.finished_us) for a in done.attempts] == [
        (AttemptOutcome.SUCCEEDED, now_us)
    ]
    if backend[0] == "postgres":  # one statement: the next one is claimed with it
        assert chained is not None and chained.deployment.id == second.id
        assert chained.attempt == 1 and chained.files == claim.files
    else:  # SQLite records the success alone; the worker claims next as usual
        assert chained is None
        chained_claim = await stores.attempts.claim("w1", CONFIG.lease, now_us)
        assert isinstance(chained_claim, Claim) and chained_claim.deployment.id == second.id
    running = await stores.deployments.get(second.id)
    assert (running.status, running.lease_owner) == (DeploymentStatus.RUNNING, "w1")
    assert [(a.worker_id, a.started_us, a.outcome) for a in running.attempts] == [
        ("w1", now_us, AttemptOutcome.RUNNING)
    ]
    notices = await stores.outbox.claim_notices(now_us, lease=30)
    assert [
        n.notice.metadata["deployment_status"] for n in notices if n.deployment_id == first.id
    ] == ["deployed"]
    await _settle(stores, second.id)


async def test_a_success_whose_lease_was_lost_records_nothing_and_claims_on(
    stores: DeployerStores, timer: ManualTimer, backend: tuple[str, str, str | None]
) -> None:
    now_us = timer.now_us()
    claim, (first, second) = await _head_claimed(stores, now_us, queued=2)
    async with stores.attempts.engine.begin() as conn:  # another worker took the lease over
        await conn.execute(
            deployments.update().where(deployments.c.id == first.id).values(lease_owner="w2")
        )

    recorded, chained = await stores.attempts.succeed_and_claim(
        claim, "w1", url="http://deploy.test/apps/app-1/", lease=CONFIG.lease, now_us=now_us
    )

    assert recorded == LeaseLost(deployment_id=first.id)
    untouched = await stores.deployments.get(first.id)
    assert (untouched.status, untouched.url) == (DeploymentStatus.RUNNING, "")
    assert [a.outcome for a in untouched.attempts] == [AttemptOutcome.RUNNING]
    if backend[0] == "postgres":
        assert chained is not None and chained.deployment.id == second.id
    else:
        assert chained is None
    await _settle(stores, first.id, second.id)


async def _settle(stores: DeployerStores, *deployment_ids: str) -> None:
    """End deployments a test left leased, so no later test's worker takes them over (the
    suite's database is shared)."""
    async with stores.attempts.engine.begin() as conn:
        await conn.execute(
            deployments.update()
            .where(deployments.c.id.in_(deployment_ids))
            .values(
                status=int(DeploymentStatus.CANCELLED),
                lease_owner=None,
                lease_expires_us=None,
            )
        )


async def test_a_success_notice_held_for_its_worker_is_not_due_for_others_until_the_hold_ends(
    stores: DeployerStores, timer: ManualTimer, backend: tuple[str, str, str | None]
) -> None:
    now_us = timer.now_us()
    claim, (deployment,) = await _head_claimed(stores, now_us)

    recorded = await _succeeded_held(stores, claim, now_us)

    def mine(notices: Sequence[PendingNotice]) -> list[PendingNotice]:
        return [n for n in notices if n.deployment_id == deployment.id]

    if backend[0] == "postgres":  # held for this worker's process, which delivers it itself
        assert recorded.notice is not None
        assert recorded.notice.notice.metadata["deployment_status"] == "deployed"
        assert mine(await stores.outbox.claim_notices(now_us + 29_000_000, lease=30)) == []
        # Its process died with it: once the hold is over, any deliverer sends it.
        later = mine(await stores.outbox.claim_notices(now_us + 31_000_000, lease=30))
        assert [n.notice for n in later] == [recorded.notice.notice]
    else:  # SQLite queues every notice due, for the poll to find
        assert recorded.notice is None
        assert len(mine(await stores.outbox.claim_notices(now_us, lease=30))) == 1


class Handed:
    """A worker's `notices`: what it handed over, and how often it said one was due."""

    def __init__(self) -> None:
        self.delivered: list[PendingNotice] = []
        self.due_calls = 0

    def deliver(self, notice: PendingNotice) -> None:
        self.delivered.append(notice)

    def due(self) -> None:
        self.due_calls += 1


async def test_a_worker_hands_its_successes_notice_to_its_deliverer(
    stores: DeployerStores, timer: ManualTimer, backend: tuple[str, str, str | None]
) -> None:
    handed = Handed()
    worker = _worker(stores, timer, ScriptedTarget())
    worker.notices = handed
    deployment = (await stores.deployments.create(_request(), timer.now_us())).deployment
    done = await _until_terminal(stores, timer, deployment.id, worker)
    assert done.status is DeploymentStatus.SUCCEEDED
    if backend[0] == "postgres":
        assert [n.deployment_id for n in handed.delivered] == [deployment.id]
        assert handed.delivered[0].notice.metadata["url"] == done.url
        assert handed.due_calls == 0
    else:
        assert (handed.delivered, handed.due_calls) == ([], 1)


async def test_a_failed_deployment_says_its_notice_is_due(
    stores: DeployerStores, timer: ManualTimer
) -> None:
    handed = Handed()
    worker = _worker(stores, timer, ScriptedTarget("permanent"))
    worker.notices = handed
    deployment = (await stores.deployments.create(_request(), timer.now_us())).deployment
    done = await _until_terminal(stores, timer, deployment.id, worker)
    assert done.status is DeploymentStatus.FAILED
    assert (handed.delivered, handed.due_calls) == ([], 1)


async def test_a_deliverer_sends_a_handed_notice_at_once_and_records_it(
    stores: DeployerStores, timer: ManualTimer, backend: tuple[str, str, str | None]
) -> None:
    now_us = timer.now_us()
    claim, (deployment,) = await _head_claimed(stores, now_us)
    notice = (await _succeeded_held(stores, claim, now_us)).notice
    if backend[0] != "postgres":  # SQLite queued it due: hand over what the poll would find
        assert notice is None
        [notice] = [
            n
            for n in await stores.outbox.claim_notices(now_us, lease=30)
            if n.deployment_id == deployment.id
        ]
    assert notice is not None
    chat = RecordingChat()
    deliverer = NoticeDeliverer(
        outbox=stores.outbox, chat=chat, clock=timer, poll_interval=1, wake=asyncio.Event()
    )
    deliverer.deliver(notice)
    async with asyncio.timeout(BOUND):
        await deliverer.settled()
    assert [
        n["deployment_status"] for n in chat.received if n["deployment_id"] == deployment.id
    ] == ["deployed"]
    # Recorded as delivered: no deliverer sends it again once the hold is over.
    after = await stores.outbox.claim_notices(now_us + 60_000_000, lease=30)
    assert [n for n in after if n.deployment_id == deployment.id] == []
