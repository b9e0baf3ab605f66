"""Deployment workers and the notice deliverer: the loops inside every deployer process.

A worker claims a due deployment, runs one attempt under the attempt's deadline while a
heartbeat extends its lease, and records how it ended. The heartbeat also carries
cancellation: a cancel request or a lost lease stops the attempt at once. The deliverer
sends the outbox's notices to chat until chat acknowledges each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from appforge.services.common.clock import Clock
from appforge.services.common.logging import get_logger
from appforge.services.deployer.domain import US, AttemptOutcome, Claim, Policy, backoff_delay
from appforge.services.deployer.metrics import (
    DEPLOY_ATTEMPTS,
    DEPLOY_RETRIES,
    DEPLOY_TIMEOUTS,
    DEPLOYMENTS,
)
from appforge.services.deployer.store import DeploymentStore
from appforge.services.deployer.targets.base import PublishError, Target

log = get_logger(__name__)

OnChange = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """How workers poll, lease and heartbeat."""

    lease: float = 30.0
    poll_interval: float = 1.0

    @property
    def heartbeat_interval(self) -> float:
        # Often enough to keep the lease, and to notice a cancel request within 2 s.
        return min(self.lease / 3, 2.0)


class _Stop(Exception):
    """Why an attempt was stopped from outside: its lease was lost, or it was cancelled."""

    def __init__(self, outcome: AttemptOutcome | None, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome  # None: the lease is lost, record nothing


class DeploymentWorker:
    """One worker loop: claim, attempt, record, repeat."""

    def __init__(
        self,
        *,
        worker_id: str,
        store: DeploymentStore,
        targets: Mapping[str, Target],
        clock: Clock,
        config: WorkerConfig,
        wake: asyncio.Event,
        on_change: OnChange,
    ) -> None:
        self.worker_id = worker_id
        self.store = store
        self.targets = targets
        self.clock = clock
        self.config = config
        self.wake = wake
        self.on_change = on_change

    async def run(self) -> None:
        """Work until cancelled."""
        while True:
            # Cleared before the claim, not after: a Deploy committed while the claim runs
            # sets it again, so the wait below returns at once instead of sleeping through.
            self.wake.clear()
            try:
                claim = await self.store.claim(
                    self.worker_id, self.config.lease, self.clock.now_us()
                )
            except Exception as exc:  # the database may be down: back off and try again
                log.warning("claim_failed", worker=self.worker_id, error=repr(exc))
                await self._idle()
                continue
            if claim is True:
                continue
            if claim is None:
                await self._idle()
                continue
            await self.attempt(claim)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.config.poll_interval)

    async def attempt(self, claim: Claim) -> None:
        """Run one attempt and record its outcome."""
        deployment = claim.deployment
        fields = {
            "deployment_id": deployment.id,
            "execution_id": deployment.execution_id,
            "attempt": claim.attempt,
            "worker": self.worker_id,
        }
        log.info("attempt_started", **fields)
        await self.on_change(deployment.id)
        outcome, error, url = await self._run_attempt(claim)
        if outcome is None:
            log.warning("attempt_abandoned_lease_lost", **fields)
            return
        finished = await self.store.finish_attempt(
            claim, self.worker_id, outcome=outcome, error=error, url=url, now_us=self.clock.now_us()
        )
        if finished is None:
            log.warning("attempt_result_discarded_lease_lost", **fields)
            return
        log.info(
            "attempt_finished",
            outcome=outcome.name.lower(),
            status=finished.name.lower(),
            error=error,
            **fields,
        )
        DEPLOY_ATTEMPTS.labels(outcome.name.lower()).inc()
        if outcome is AttemptOutcome.TIMED_OUT:
            DEPLOY_TIMEOUTS.inc()
        if finished.terminal:
            DEPLOYMENTS.labels(finished.name.lower()).inc()
        elif outcome is not AttemptOutcome.SUCCEEDED:
            DEPLOY_RETRIES.inc()
        await self.on_change(deployment.id)

    async def _run_attempt(self, claim: Claim) -> tuple[AttemptOutcome | None, str, str]:
        deployment = claim.deployment
        target = self.targets.get(deployment.target)
        if target is None:
            return (
                AttemptOutcome.FAILED_PERMANENT,
                f"target {deployment.target!r} is not configured",
                "",
            )
        timeout = max(0.0, (claim.deadline_us - self.clock.now_us()) / US)
        try:
            files = await self.store.artifact(deployment.id)
            publish = asyncio.ensure_future(
                target.publish(
                    app_id=deployment.app_id,
                    app_version_id=deployment.app_version_id,
                    files=files,
                )
            )
            watchdog = asyncio.ensure_future(self._heartbeat(deployment.id))
            try:
                done, _ = await asyncio.wait(
                    {publish, watchdog}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (publish, watchdog):
                    task.cancel()
                await asyncio.gather(publish, watchdog, return_exceptions=True)
            if publish in done and not publish.cancelled():
                publication = publish.result()
                return AttemptOutcome.SUCCEEDED, "", publication.url
            if watchdog in done and not watchdog.cancelled():
                stop = watchdog.exception()
                if isinstance(stop, _Stop):
                    return stop.outcome, str(stop), ""
                raise stop or RuntimeError("heartbeat ended")
            return AttemptOutcome.TIMED_OUT, f"attempt timed out after {timeout:g}s", ""
        except PublishError as exc:
            outcome = (
                AttemptOutcome.FAILED_RETRYABLE
                if exc.retryable
                else AttemptOutcome.FAILED_PERMANENT
            )
            return outcome, str(exc), ""
        except OSError as exc:  # connection errors and timeouts included
            return AttemptOutcome.FAILED_RETRYABLE, repr(exc), ""
        except Exception as exc:
            log.exception("attempt_crashed", deployment_id=deployment.id, error=repr(exc))
            return AttemptOutcome.FAILED_RETRYABLE, f"unexpected error: {exc!r}", ""

    async def _heartbeat(self, deployment_id: str) -> None:
        """Extend the lease until cancelled; raise _Stop on a lost lease or a cancel."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                cancel = await self.store.heartbeat(
                    deployment_id, self.worker_id, self.config.lease, self.clock.now_us()
                )
            except Exception as exc:  # keep trying until the lease itself runs out
                log.warning("heartbeat_failed", deployment_id=deployment_id, error=repr(exc))
                continue
            if cancel is None:
                raise _Stop(None, "lease lost")
            if cancel:
                raise _Stop(AttemptOutcome.CANCELLED, "cancelled on request")


class ChatNotifier(Protocol):
    """Delivers a deployment's end to the execution's chat message."""

    async def notify(
        self, *, app_id: str, execution_id: str, failed: bool, metadata: Mapping[str, Any]
    ) -> None: ...


class NoticeDeliverer:
    """Sends outbox notices to chat until each one is acknowledged."""

    RETRY = Policy(initial_backoff=0.1, max_backoff=5.0)
    # Longer than one notify call (10 s timeout), so a claimed notice is not sent twice.
    CLAIM_LEASE = 30.0

    def __init__(
        self,
        *,
        store: DeploymentStore,
        chat: ChatNotifier,
        clock: Clock,
        poll_interval: float,
        wake: asyncio.Event,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.chat = chat
        self.clock = clock
        self.poll_interval = poll_interval
        self.wake = wake
        self.rng = rng or random.Random()
        self._in_flight = asyncio.Semaphore(16)

    async def run(self) -> None:
        while True:
            self.wake.clear()  # before reading, so a notice written meanwhile is not missed
            try:
                await self.deliver_due()
            except Exception as exc:
                log.warning("outbox_read_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_interval)

    async def deliver_due(self) -> int:
        """Claim the due notices and try each once, concurrently; return how many chat took."""
        notices = await self.store.claim_notices(self.clock.now_us(), self.CLAIM_LEASE)
        results = await asyncio.gather(*(self._deliver(n) for n in notices))
        return sum(results)

    async def _deliver(self, notice: Any) -> bool:
        async with self._in_flight:
            try:
                await self.chat.notify(
                    app_id=notice.app_id,
                    execution_id=notice.execution_id,
                    failed=notice.failed,
                    metadata=notice.metadata,
                )
            except Exception as exc:
                delay = backoff_delay(notice.tries + 1, self.RETRY, self.rng)
                await self.store.notice_failed(
                    notice.deployment_id, repr(exc), self.clock.now_us() + int(delay * US)
                )
                log.warning(
                    "notice_not_delivered",
                    deployment_id=notice.deployment_id,
                    execution_id=notice.execution_id,
                    tries=notice.tries + 1,
                    error=repr(exc),
                )
                return False
            await self.store.notice_delivered(notice.deployment_id, self.clock.now_us())
            log.info(
                "notice_delivered",
                deployment_id=notice.deployment_id,
                execution_id=notice.execution_id,
            )
            return True
