"""Deployer use cases: queue, read, watch and cancel deployments."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from appforge.services.common import keys
from appforge.services.common.bus import Bus
from appforge.services.common.clock import Clock
from appforge.services.common.errors import FailedPrecondition, InvalidArgument
from appforge.services.common.logging import get_logger
from appforge.services.common.settings import Settings
from appforge.services.common.validation import require_id
from appforge.services.deployer.artifacts import ArtifactLimits, validate_files
from appforge.services.deployer.content_types import content_type_for
from appforge.services.deployer.domain import TARGETS, Deployment, DeployRequest, Policy
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.store import DeploymentStore
from appforge.services.deployer.worker import IdleWorkers

log = get_logger(__name__)
_T = TypeVar("_T")

WATCH_POLL = 1.0


@dataclass(frozen=True, kw_only=True)
class PolicyOverrides:
    """Policy fields a request set (None: the server's default)."""

    attempt_timeout: float | None = None
    max_attempts: int | None = None
    initial_backoff: float | None = None
    max_backoff: float | None = None
    overall_deadline: float | None = None


class DeployerService:
    """Durable deployments: Deploy returns at once; workers do the publishing."""

    def __init__(
        self,
        store: DeploymentStore,
        bus: Bus,
        clock: Clock,
        settings: Settings,
        deploy: DeploySettings,
        *,
        wake_workers: asyncio.Event,
        available_targets: Sequence[str],
        idle_workers: IdleWorkers | None = None,
        artifact_limits: ArtifactLimits | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.settings = settings
        self.config = deploy
        self.wake_workers = wake_workers
        self.idle_workers = idle_workers
        self.available_targets = tuple(available_targets)
        self.artifact_limits = artifact_limits or ArtifactLimits()

    def policy(self, overrides: PolicyOverrides) -> Policy:
        """The request's policy over the server's defaults, validated."""
        defaults = self.config.policy
        return Policy(
            attempt_timeout=_pick(overrides.attempt_timeout, defaults.attempt_timeout),
            max_attempts=_pick(overrides.max_attempts, defaults.max_attempts),
            initial_backoff=_pick(overrides.initial_backoff, defaults.initial_backoff),
            max_backoff=_pick(overrides.max_backoff, defaults.max_backoff),
            overall_deadline=_pick(overrides.overall_deadline, defaults.overall_deadline),
        ).validated()

    async def deploy(
        self,
        *,
        app_id: str,
        app_version_id: str,
        execution_id: str,
        target: str,
        files: Sequence[tuple[str, bytes, str]],
        policy: PolicyOverrides,
    ) -> Deployment:
        limits = self.settings.limits
        require_id(app_id, "app_id", limits)
        require_id(app_version_id, "app_version_id", limits)
        require_id(execution_id, "execution_id", limits)
        target = target or self.config.target
        if target not in TARGETS:
            raise InvalidArgument(f"must be one of {', '.join(TARGETS)}", field="target")
        if target not in self.available_targets:
            raise FailedPrecondition(f"the {target} target is not configured here", field="target")
        paths = validate_files([(p, len(c)) for p, c, _ in files], self.artifact_limits)
        request = DeployRequest(
            app_id=app_id,
            app_version_id=app_version_id,
            execution_id=execution_id,
            target=target,
            policy=self.policy(policy),
            files=tuple(
                (path, content, content_type or content_type_for(path))
                for path, (_, content, content_type) in zip(paths, files, strict=True)
            ),
        )
        enqueued = await self.store.create(request, self.clock.now_us())
        deployment = enqueued.deployment
        if enqueued.created:
            log.info(
                "deployment_queued",
                deployment_id=deployment.id,
                execution_id=execution_id,
                app_version_id=app_version_id,
                target=target,
                files=len(files),
            )
            self.wake_workers.set()
            if self.idle_workers is None or not self.idle_workers.count:
                # No worker here is free to take it: wake the other replicas'.
                await self._publish(keys.deployer_jobs_channel(), deployment.id)
            await self.changed(deployment.id)
        return deployment

    async def get(self, deployment_id: str) -> Deployment:
        """The deployment with its attempts, or NotFound."""
        return await self.store.get(
            require_id(deployment_id, "deployment_id", self.settings.limits)
        )

    async def cancel(self, deployment_id: str, reason: str) -> Deployment:
        require_id(deployment_id, "deployment_id", self.settings.limits)
        deployment = await self.store.cancel(deployment_id, reason[:500], self.clock.now_us())
        log.info(
            "deployment_cancel_requested",
            deployment_id=deployment_id,
            status=deployment.status.name,
        )
        await self.changed(deployment_id)
        return deployment

    async def watch(self, deployment_id: str) -> AsyncIterator[Deployment]:
        """The current state, then each change, ending with a terminal state."""
        require_id(deployment_id, "deployment_id", self.settings.limits)
        async with self.bus.subscribe(keys.deployment_changes_channel(deployment_id)) as changes:
            last: Deployment | None = None
            while True:
                current = await self.store.get(deployment_id)
                if current != last:
                    yield current
                    last = current
                if current.status.terminal:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), WATCH_POLL)

    async def changed(self, deployment_id: str) -> None:
        """Tell watchers (in any process) that a deployment changed."""
        await self._publish(keys.deployment_changes_channel(deployment_id), deployment_id)

    async def _publish(self, channel: str, deployment_id: str) -> None:
        try:
            await self.bus.publish(channel, deployment_id.encode())
        except Exception as exc:  # workers and watchers also poll: a lost wake-up only delays
            log.warning("publish_failed", deployment_id=deployment_id, error=repr(exc))


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value
