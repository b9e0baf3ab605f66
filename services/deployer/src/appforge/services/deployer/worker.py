"""Deployment workers: the loops inside every deployer process that publish deployments.

A worker claims a due deployment, runs one attempt under the attempt's deadline while a
heartbeat extends its lease, and records how it ended. The heartbeat also carries
cancellation: a cancel request or a lost lease stops the attempt at once. Every wait (the
deadline, the heartbeat, an idle poll) is on the injected timer, never on real seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, assert_never

from appforge.services.common import keys, tracing
from appforge.services.common.bus import Bus
from appforge.services.common.logging import get_logger
from appforge.services.deployer.domain import (
    US,
    AttemptOutcome,
    AttemptRecorded,
    Claim,
    DeploymentStatus,
    LeaseLost,
    LeaseState,
    NothingDue,
    PendingNotice,
    Recovered,
    WorkerConfig,
)
from appforge.services.deployer.metrics import (
    DEPLOY_ATTEMPTS,
    DEPLOY_RETRIES,
    DEPLOY_TIMEOUTS,
    DEPLOYMENTS,
)
from appforge.services.deployer.store import AttemptStore
from appforge.services.deployer.targets.base import PublishError, Target
from appforge.services.deployer.timing import Timer, wait_for_event

log = get_logger(__name__)

# How long a success's notice, handed to this process's deliverer, is held from the others:
# longer than a delivery takes (a notify call times out after 10 s), so it is not sent twice;
# if this process dies with it, any deliverer sends it after that.
NOTICE_HOLD = 30.0

OnChange = Callable[[str], Awaitable[None]]


class IdleWorkers:
    """This process's idle workers. One at a time waits for a wake-up or its poll (the
    others queue behind it for their turn), so one Deploy wakes one claim, not a claim by
    every idle worker; a worker that claimed something wakes the next, in case there is
    more. `count` says whether any worker here is idle: a Deploy this process queued then
    needs no other replica woken."""

    def __init__(self) -> None:
        self.turn = asyncio.Lock()
        self.count = 0


class Notices(Protocol):
    """Where a worker says a deployment's end has a notice for chat."""

    # A notice queued held for this process: deliver it now, no one else will for a while.
    def deliver(self, notice: PendingNotice) -> None: ...

    # A notice was queued due: look for it.
    def due(self) -> None: ...


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
        store: AttemptStore,
        targets: Mapping[str, Target],
        clock: Timer,
        config: WorkerConfig,
        wake: asyncio.Event,
        on_change: OnChange,
        notices: Notices | None = None,
        idle: IdleWorkers | None = None,
    ) -> None:
        """`notices`: this process's deliverer. With one, a success's notice is queued held
        for it and handed to it at once; without, notices are queued due for any deliverer
        to find. `idle`: shared by the process's workers (without, each waits on `wake`
        on its own, and a wake-up wakes every idle one)."""
        self.worker_id = worker_id
        self.store = store
        self.targets = targets
        self.clock = clock
        self.config = config
        self.wake = wake
        self.on_change = on_change
        self.notices = notices
        self.idle = idle

    async def run(self) -> None:
        """Work until cancelled."""
        while True:
            # Cleared before the claim, not after: a Deploy committed while the claim runs
            # sets it again, so the wait below returns at once instead of sleeping through.
            self.wake.clear()
            # The idle wait ends relative to this same instant, so a clock moved on while
            # the claim ran is never slept through.
            now_us = self.clock.now_us()
            try:
                claimed = await self.store.claim(self.worker_id, self.config.lease, now_us)
            except Exception as exc:  # the database may be down: back off and try again
                log.warning("claim_failed", worker=self.worker_id, error=repr(exc))
                await self._idle(now_us)
                continue
            match claimed:
                case Claim():
                    if self.idle is not None and self.idle.count:
                        self.wake.set()  # there may be more: the next idle worker looks
                    await self._work_from(claimed)
                case Recovered():
                    log.warning(
                        "lease_taken_over",
                        deployment_id=claimed.deployment_id,
                        attempt=claimed.lost_attempt,
                        lost_worker=claimed.lost_worker,
                        status=claimed.status.name.lower(),
                        worker=self.worker_id,
                    )
                    DEPLOY_ATTEMPTS.labels(AttemptOutcome.LOST.name.lower()).inc()
                    if claimed.status.terminal:
                        DEPLOYMENTS.labels(claimed.status.name.lower()).inc()
                    self._notice_of(claimed.status, None)
                    await self.on_change(claimed.deployment_id)
                case NothingDue():
                    await self._idle(now_us)
                case _:
                    assert_never(claimed)

    async def _work_from(self, claim: Claim) -> None:
        """Attempt `claim`, then each deployment a success claimed with it."""
        chained: Claim | None = claim
        try:
            while chained is not None:
                chained = await self.attempt(chained)
        except Exception as exc:  # an end not recorded: the database may be down
            # The lease runs out and the deployment is taken over (its attempt LOST, then
            # retried); this worker goes on once it can.
            log.warning("attempt_end_not_recorded", worker=self.worker_id, error=repr(exc))
            await self._idle(self.clock.now_us())

    def _notice_of(self, status: DeploymentStatus, held: PendingNotice | None) -> None:
        """Tell the deliverer of a deployment's end: the notice held for it, or that one
        is due (any end but a success on PostgreSQL)."""
        if self.notices is None or not status.terminal:
            return
        if held is not None:
            self.notices.deliver(held)
        else:
            self.notices.due()

    async def _idle(self, since_us: int) -> None:
        poll_us = int(self.config.poll_interval * US)
        if self.idle is None:
            await wait_for_event(self.wake, self.clock, since_us + poll_us)
            return
        self.idle.count += 1
        try:
            async with self.idle.turn:
                # The poll counts from when this worker's turn came: the process's idle
                # workers poll once a period between them, not once each.
                turn_us = max(since_us, self.clock.now_us())
                await wait_for_event(self.wake, self.clock, turn_us + poll_us)
        finally:
            self.idle.count -= 1

    async def attempt(self, claim: Claim) -> Claim | None:
        """Run one attempt and record its outcome; the next deployment when recording a
        success claimed it too."""
        deployment = claim.deployment
        fields = {
            "deployment_id": deployment.id,
            "execution_id": deployment.execution_id,
            "attempt": claim.attempt,
            "worker": self.worker_id,
        }
        log.info("attempt_started", **fields)
        await self.on_change(deployment.id)
        with tracing.span(
            "deployer attempt",
            attributes={
                tracing.EXECUTION_ID: deployment.execution_id,
                "appforge.deployment_id": deployment.id,
                "appforge.attempt": claim.attempt,
            },
        ):
            outcome, error, url = await self._run_attempt(claim)
        if outcome is None:
            log.warning("attempt_abandoned_lease_lost", **fields)
            return None
        now_us = self.clock.now_us()
        chained: Claim | None = None
        hold = 0.0 if self.notices is None else NOTICE_HOLD
        if outcome is AttemptOutcome.SUCCEEDED:
            recorded, chained = await self.store.succeed_and_claim(
                claim,
                self.worker_id,
                url=url,
                lease=self.config.lease,
                now_us=now_us,
                hold_notice=hold,
            )
        else:
            recorded = await self.store.finish_attempt(
                claim, self.worker_id, outcome=outcome, error=error, url=url, now_us=now_us
            )
        match recorded:
            case LeaseLost():
                log.warning("attempt_result_discarded_lease_lost", **fields)
                return chained
            case AttemptRecorded(status=finished):
                self._notice_of(finished, recorded.notice)
            case _:
                assert_never(recorded)
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
        return chained

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
            publish = asyncio.ensure_future(
                target.publish(
                    app_id=deployment.app_id,
                    app_version_id=deployment.app_version_id,
                    files=claim.files,
                )
            )
            watchdog = asyncio.ensure_future(self._heartbeat(deployment.id))
            deadline = asyncio.ensure_future(self.clock.sleep_until(claim.deadline_us))
            running = (publish, watchdog, deadline)
            try:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
            # A publish that finished counts, even if the deadline passed meanwhile.
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
        interval_us = int(self.config.heartbeat_interval * US)
        while True:
            await self.clock.sleep_until(self.clock.now_us() + interval_us)
            try:
                lease = await self.store.heartbeat(
                    deployment_id, self.worker_id, self.config.lease, self.clock.now_us()
                )
            except Exception as exc:  # keep trying until the lease itself runs out
                log.warning("heartbeat_failed", deployment_id=deployment_id, error=repr(exc))
                continue
            match lease:
                case LeaseState.HELD:
                    continue
                case LeaseState.LOST:
                    raise _Stop(None, "lease lost")
                case LeaseState.CANCEL_REQUESTED:
                    raise _Stop(AttemptOutcome.CANCELLED, "cancelled on request")
                case _:
                    assert_never(lease)


async def listen_for_jobs(bus: Bus, wake: asyncio.Event, *, retry: float = 1.0) -> None:
    """Set `wake` whenever any replica queued a deployment, so that this process's idle
    workers claim it at once instead of on their next poll (which stays, as the safety net
    for a lost message). A resync (messages lost) wakes too; a bus that cannot be reached is
    tried again after `retry` seconds, the poll covering meanwhile."""
    while True:
        try:
            async with bus.subscribe(keys.deployer_jobs_channel()) as queued:
                wake.set()  # whatever was queued while not subscribed
                async for _ in queued:
                    wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("job_wakeups_unavailable", error=repr(exc), retry_s=retry)
            await asyncio.sleep(retry)
