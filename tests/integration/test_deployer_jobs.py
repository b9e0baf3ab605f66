"""Durable deployment jobs: retries, deadlines, permanent errors, leases, cancel, outbox.

A scripted target stands in for the real ones (tested on their own); policies are in
milliseconds, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest_asyncio

from appforge.cli import installed
from appforge.services.common import db, migrate
from appforge.services.common.clock import SystemClock
from appforge.services.deployer.domain import (
    AttemptOutcome,
    Deployment,
    DeploymentStatus,
    DeployRequest,
    Policy,
)
from appforge.services.deployer.store import DeploymentStore
from appforge.services.deployer.targets.base import ArtifactFile, Publication, PublishError
from appforge.services.deployer.worker import DeploymentWorker, NoticeDeliverer, WorkerConfig

FAST = Policy(attempt_timeout=0.3, max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
CONFIG = WorkerConfig(lease=0.6, poll_interval=0.02)


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
        self.arrived = asyncio.Event()

    async def notify(
        self, *, app_id: str, execution_id: str, failed: bool, metadata: Mapping[str, Any]
    ) -> None:
        if not self.up:
            raise ConnectionError("chat is down")
        self.received.append({"execution_id": execution_id, "failed": failed, **metadata})
        self.arrived.set()


@pytest_asyncio.fixture
async def store(
    backend: tuple[str, str, str | None], tmp_path: Path
) -> AsyncIterator[DeploymentStore]:
    engine = db.create_engine(backend[1])
    await migrate.upgrade(engine, installed.histories())
    yield DeploymentStore(engine)
    await engine.dispose()


def _request(policy: Policy = FAST, version: str | None = None) -> DeployRequest:
    return DeployRequest(
        app_id="app-1",
        app_version_id=version or str(uuid.uuid4()),
        execution_id=str(uuid.uuid4()),
        target="local",
        policy=policy,
        files=(("index.html", b"<html></html>", "text/html"),),
    )


class Changes:
    """What workers report through their on_change hook: the event tests wait on."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def notify(self, _deployment_id: str) -> None:
        self._event.set()

    async def until(
        self, store: DeploymentStore, deployment_id: str, done: Callable[[Deployment], bool]
    ) -> Deployment:
        """The deployment once `done` holds, re-read after each reported change (20 s bound)."""
        async with asyncio.timeout(20):
            while True:
                self._event.clear()  # before reading: a change after the read still wakes us
                deployment = await store.get(deployment_id)
                if done(deployment):
                    return deployment
                await self._event.wait()


def _worker(
    store: DeploymentStore, target: ScriptedTarget, name: str = "w1", changes: Changes | None = None
) -> DeploymentWorker:
    return DeploymentWorker(
        worker_id=name,
        store=store,
        targets={"local": target},
        clock=SystemClock(),
        config=CONFIG,
        wake=asyncio.Event(),
        on_change=(changes or Changes()).notify,
    )


async def _until_terminal(
    store: DeploymentStore, deployment_id: str, *workers: DeploymentWorker
) -> Deployment:
    changes = Changes()
    for worker in workers:
        worker.on_change = changes.notify
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        return await changes.until(store, deployment_id, lambda d: d.status.terminal)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _notice(
    store: DeploymentStore, chat: RecordingChat, deployment_id: str
) -> dict[str, Any]:
    """The notice chat receives for one deployment (other tests' notices share the outbox)."""
    deliverer = NoticeDeliverer(
        store=store, chat=chat, clock=SystemClock(), poll_interval=0.02, wake=asyncio.Event()
    )
    task = asyncio.create_task(deliverer.run())
    try:
        async with asyncio.timeout(20):
            while not (mine := [n for n in chat.received if n["deployment_id"] == deployment_id]):
                chat.arrived.clear()
                await chat.arrived.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return mine[-1]


async def test_two_retryable_failures_then_success(store: DeploymentStore) -> None:
    target = ScriptedTarget("retryable", "retryable")
    deployment, created = await store.create(_request(), SystemClock().now_us())
    assert created and deployment.status is DeploymentStatus.QUEUED
    done = await _until_terminal(store, deployment.id, _worker(store, target))
    assert done.status is DeploymentStatus.SUCCEEDED
    assert [a.outcome for a in done.attempts] == [
        AttemptOutcome.FAILED_RETRYABLE,
        AttemptOutcome.FAILED_RETRYABLE,
        AttemptOutcome.SUCCEEDED,
    ]
    assert done.url.endswith("/apps/app-1/") and target.published == [deployment.app_version_id]
    notice = await _notice(store, RecordingChat(), deployment.id)
    assert notice == {
        "execution_id": deployment.execution_id,
        "failed": False,
        "deployment_id": deployment.id,
        "attempts": 3,
        "deployment_status": "deployed",
        "url": done.url,
    }


async def test_every_attempt_hangs_ends_timed_out_after_max_attempts(
    store: DeploymentStore,
) -> None:
    target = ScriptedTarget("hang", "hang", "hang", "hang")
    policy = Policy(attempt_timeout=0.1, max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    deployment, _ = await store.create(_request(policy), SystemClock().now_us())
    done = await _until_terminal(store, deployment.id, _worker(store, target))
    assert done.status is DeploymentStatus.TIMED_OUT
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.TIMED_OUT] * 3
    assert target.calls == 3
    notice = await _notice(store, RecordingChat(), deployment.id)
    assert notice["failed"] is True
    assert notice["error"] == "Deployment timeout"
    assert notice["deployment_status"] == "timeout"
    assert notice["attempts"] == 3


async def test_a_permanent_error_fails_after_one_attempt(store: DeploymentStore) -> None:
    target = ScriptedTarget("permanent")
    deployment, _ = await store.create(_request(), SystemClock().now_us())
    done = await _until_terminal(store, deployment.id, _worker(store, target))
    assert done.status is DeploymentStatus.FAILED
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.FAILED_PERMANENT]
    assert "403 AccessDenied" in done.error


async def test_deploying_one_version_twice_is_one_deployment(store: DeploymentStore) -> None:
    request = _request()
    first, created = await store.create(request, SystemClock().now_us())
    again, created_again = await store.create(request, SystemClock().now_us())
    assert created and not created_again and again.id == first.id
    target = ScriptedTarget()
    await _until_terminal(store, first.id, _worker(store, target))
    assert target.published == [request.app_version_id]


async def test_a_dead_workers_lease_expires_and_another_finishes(store: DeploymentStore) -> None:
    deployment, _ = await store.create(_request(), SystemClock().now_us())
    claim = await store.claim("dead-worker", 0.05, SystemClock().now_us())
    assert claim is not None and claim is not True and claim is not False
    # The dead worker never heartbeats; once its lease expires a live one takes over.
    target = ScriptedTarget()
    done = await _until_terminal(store, deployment.id, _worker(store, target, "live"))
    assert done.status is DeploymentStatus.SUCCEEDED
    assert [(a.worker_id, a.outcome) for a in done.attempts] == [
        ("dead-worker", AttemptOutcome.LOST),
        ("live", AttemptOutcome.SUCCEEDED),
    ]
    assert target.published == [deployment.app_version_id]
    # The dead worker's late result is discarded: the lease is no longer its own.
    late = await store.finish_attempt(
        claim,
        "dead-worker",
        outcome=AttemptOutcome.FAILED_PERMANENT,
        error="late",
        url="",
        now_us=SystemClock().now_us(),
    )
    assert late is None
    assert (await store.get(deployment.id)).status is DeploymentStatus.SUCCEEDED


async def test_cancel_stops_a_running_attempt(store: DeploymentStore) -> None:
    target = ScriptedTarget("hang")
    policy = Policy(attempt_timeout=30, max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
    deployment, _ = await store.create(_request(policy), SystemClock().now_us())
    changes = Changes()
    task = asyncio.create_task(_worker(store, target, changes=changes).run())
    try:
        await changes.until(store, deployment.id, lambda d: d.status is DeploymentStatus.RUNNING)
        await store.cancel(deployment.id, "user asked", SystemClock().now_us())
        done = await changes.until(store, deployment.id, lambda d: d.status.terminal)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert done.status is DeploymentStatus.CANCELLED
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.CANCELLED]


async def test_cancel_of_a_waiting_deployment_is_immediate(store: DeploymentStore) -> None:
    deployment, _ = await store.create(_request(), SystemClock().now_us())
    cancelled = await store.cancel(deployment.id, "", SystemClock().now_us())
    assert cancelled.status is DeploymentStatus.CANCELLED and cancelled.attempts == ()
    notice = await _notice(store, RecordingChat(), deployment.id)
    assert notice["deployment_status"] == "cancelled"


async def test_a_notice_waits_for_chat_to_come_back(store: DeploymentStore) -> None:
    deployment, _ = await store.create(_request(), SystemClock().now_us())
    await _until_terminal(store, deployment.id, _worker(store, ScriptedTarget()))
    chat = RecordingChat(up=False)
    deliverer = NoticeDeliverer(
        store=store, chat=chat, clock=SystemClock(), poll_interval=0.02, wake=asyncio.Event()
    )
    await deliverer.deliver_due()  # chat is down: nothing delivered, nothing lost
    assert chat.received == []
    chat.up = True
    notice = await _notice(store, chat, deployment.id)
    assert notice["deployment_id"] == deployment.id
    assert len([n for n in chat.received if n["deployment_id"] == deployment.id]) == 1
