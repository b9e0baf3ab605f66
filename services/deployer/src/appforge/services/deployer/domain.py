"""Deployer domain: deployment states, the retry policy, and how a deployment ends. No I/O.

A deployment is a durable job: each attempt has a deadline, a failed attempt is retried
after an exponentially growing, fully jittered delay while attempts remain, errors that no
retry can fix end it at once, and its end always becomes a notice for the execution's
own chat message.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, TypeAlias

from appforge.services.common.errors import InvalidArgument
from appforge.services.common.retry import backoff_delay as retry_delay
from appforge.services.deployer.targets.base import ArtifactFile

US = 1_000_000


class DeploymentStatus(IntEnum):
    """Where a deployment stands; the last four are terminal."""

    QUEUED = 1
    RUNNING = 2
    RETRY_WAIT = 3
    SUCCEEDED = 4
    FAILED = 5
    TIMED_OUT = 6
    CANCELLED = 7

    @property
    def terminal(self) -> bool:
        return self >= DeploymentStatus.SUCCEEDED


class AttemptOutcome(IntEnum):
    """How one attempt ended (RUNNING while it runs)."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED_RETRYABLE = 3
    FAILED_PERMANENT = 4
    TIMED_OUT = 5
    LOST = 6  # its worker stopped heartbeating; another worker took the job over
    CANCELLED = 7


# `noop` publishes nothing (targets/noop.py): the queue measured on its own.
TARGETS = ("local", "s3", "noop")


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Deadlines and retries of one deployment, in seconds.

    These defaults are the server's defaults too: DeploySettings reads them, so they are
    written here only.
    """

    attempt_timeout: float = 300.0
    max_attempts: int = 4
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    multiplier: float = 2.0
    overall_deadline: float | None = None

    def validated(self) -> Policy:
        """Itself, or InvalidArgument naming the offending field."""
        for name in ("attempt_timeout", "initial_backoff", "max_backoff"):
            if not getattr(self, name) > 0:
                raise InvalidArgument("must be positive", field=f"policy.{name}")
        if self.max_attempts < 1:
            raise InvalidArgument("must be at least 1", field="policy.max_attempts")
        if self.max_backoff < self.initial_backoff:
            raise InvalidArgument("must not be below initial_backoff", field="policy.max_backoff")
        if self.overall_deadline is not None and not self.overall_deadline > 0:
            raise InvalidArgument("must be positive", field="policy.overall_deadline")
        return self


def backoff_delay(retry: int, policy: Policy, rng: random.Random) -> float:
    """Seconds to wait before retry number `retry` (1 for the first retry).

    Exponential with full jitter: uniform in [0, min(max_backoff, initial * multiplier^(retry-1))],
    so retrying workers spread out instead of stampeding together.
    """
    return retry_delay(
        retry,
        initial=policy.initial_backoff,
        maximum=policy.max_backoff,
        multiplier=policy.multiplier,
        uniform=rng.uniform,
    )


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """How workers poll, lease and heartbeat, in seconds."""

    lease: float = 30.0
    poll_interval: float = 1.0

    @property
    def heartbeat_interval(self) -> float:
        # Often enough to keep the lease, and to notice a cancel request within 2 s.
        return min(self.lease / 3, 2.0)


@dataclass(frozen=True, kw_only=True)
class NextStep:
    """What follows a failed attempt: a retry at `retry_at_us`, or a terminal status."""

    status: DeploymentStatus
    retry_at_us: int | None = None
    reason: str = ""


def after_failure(
    *,
    outcome: AttemptOutcome,
    error: str,
    attempts_made: int,
    policy: Policy,
    created_us: int,
    now_us: int,
    rng: random.Random,
) -> NextStep:
    """Retry or give up after an attempt that did not succeed.

    Permanent errors end the deployment at once. Otherwise it is retried while attempts
    remain and the retry would start before the overall deadline; when it gives up, a
    deployment whose last attempt timed out is TIMED_OUT, any other FAILED.
    """
    if outcome is AttemptOutcome.FAILED_PERMANENT:
        return NextStep(status=DeploymentStatus.FAILED, reason=error)
    if outcome is AttemptOutcome.CANCELLED:
        return NextStep(status=DeploymentStatus.CANCELLED, reason=error or "cancelled")
    final = (
        DeploymentStatus.TIMED_OUT
        if outcome in (AttemptOutcome.TIMED_OUT, AttemptOutcome.LOST)
        else DeploymentStatus.FAILED
    )
    if attempts_made >= policy.max_attempts:
        return NextStep(status=final, reason=f"{error} (after {attempts_made} attempts)")
    retry_at = now_us + int(backoff_delay(attempts_made, policy, rng) * US)
    if policy.overall_deadline is not None:
        deadline = created_us + int(policy.overall_deadline * US)
        if retry_at >= deadline:
            return NextStep(status=DeploymentStatus.TIMED_OUT, reason="overall deadline passed")
    return NextStep(status=DeploymentStatus.RETRY_WAIT, retry_at_us=retry_at, reason=error)


def attempt_deadline_us(*, started_us: int, policy: Policy, created_us: int) -> int:
    """When an attempt must be over: its own timeout, or the overall deadline if sooner."""
    deadline = started_us + int(policy.attempt_timeout * US)
    if policy.overall_deadline is not None:
        deadline = min(deadline, created_us + int(policy.overall_deadline * US))
    return deadline


@dataclass(frozen=True, kw_only=True)
class Notice:
    """What the execution's chat message becomes when its deployment ends."""

    failed: bool
    metadata: dict[str, Any]


def final_notice(
    *,
    status: DeploymentStatus,
    deployment_id: str,
    attempts: int,
    url: str = "",
    error: str = "",
) -> Notice:
    """The message update for a terminal deployment: `deployed` with the URL on success;
    on a timeout the message fails with `error: "Deployment timeout"`, so nothing hangs."""
    base: dict[str, Any] = {"deployment_id": deployment_id, "attempts": attempts}
    if status is DeploymentStatus.SUCCEEDED:
        return Notice(failed=False, metadata={**base, "deployment_status": "deployed", "url": url})
    if status is DeploymentStatus.TIMED_OUT:
        return Notice(
            failed=True,
            metadata={**base, "error": "Deployment timeout", "deployment_status": "timeout"},
        )
    if status is DeploymentStatus.CANCELLED:
        return Notice(
            failed=True,
            metadata={
                **base,
                "error": f"Deployment cancelled: {error}" if error else "Deployment cancelled",
                "deployment_status": "cancelled",
            },
        )
    if status is DeploymentStatus.FAILED:
        return Notice(
            failed=True,
            metadata={
                **base,
                "error": f"Deployment failed: {error}",
                "deployment_status": "failed",
            },
        )
    raise ValueError(f"{status.name} is not a terminal status")


# --- deployments ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One try at publishing a deployment."""

    number: int
    worker_id: str
    started_us: int
    outcome: AttemptOutcome
    finished_us: int | None = None
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """A durable deployment job and what happened to it."""

    id: str
    app_id: str
    app_version_id: str
    execution_id: str
    target: str
    status: DeploymentStatus
    policy: Policy
    attempts_made: int
    next_attempt_us: int
    created_us: int
    updated_us: int
    url: str = ""
    error: str = ""
    finished_us: int | None = None
    lease_owner: str | None = None
    cancel_requested: bool = False
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DeployRequest:
    """A validated Deploy call: what to publish, where, under which policy."""

    app_id: str
    app_version_id: str
    execution_id: str
    target: str
    policy: Policy
    files: tuple[tuple[str, bytes, str], ...]  # (path, content, content_type)


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A deployment a worker now holds the lease of, with the attempt it is to make and the
    files it publishes (read with the claim: no round trip of its own)."""

    deployment: Deployment
    attempt: int
    deadline_us: int
    files: tuple[ArtifactFile, ...]


# --- what the store answers a worker ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Enqueued:
    """The deployment a Deploy call stands for; `created` is False if it was queued before."""

    deployment: Deployment
    created: bool


@dataclass(frozen=True, kw_only=True)
class Recovered:
    """A crashed worker's deployment, taken over: its lost attempt is recorded and the
    deployment moved on (retried later, or ended); there is no attempt to make now."""

    deployment_id: str
    lost_attempt: int
    lost_worker: str
    status: DeploymentStatus


@dataclass(frozen=True, kw_only=True)
class NothingDue:
    """No deployment is due now."""


ClaimResult: TypeAlias = Claim | Recovered | NothingDue


class LeaseState(Enum):
    """What a heartbeat found: the lease still held, held with a cancel requested, or lost."""

    HELD = "held"
    CANCEL_REQUESTED = "cancel_requested"
    LOST = "lost"


@dataclass(frozen=True, kw_only=True)
class AttemptRecorded:
    """An attempt's end was recorded; `status` is where its deployment now stands.
    `notice`: the notice the end queued held for the recording worker's process to deliver
    (None: queued due, for any deliverer to find)."""

    status: DeploymentStatus
    notice: PendingNotice | None = None


@dataclass(frozen=True, kw_only=True)
class LeaseLost:
    """An attempt's end was discarded: the worker no longer held the deployment's lease."""

    deployment_id: str


FinishResult: TypeAlias = AttemptRecorded | LeaseLost


@dataclass(frozen=True, kw_only=True)
class PendingNotice:
    """A notice in the outbox, due for delivery to the execution's chat message."""

    deployment_id: str
    app_id: str
    execution_id: str
    notice: Notice
    tries: int
