"""The notice deliverer: sends the outbox's notices to chat until chat acknowledges each one."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any, Protocol

from appforge.services.common.logging import get_logger
from appforge.services.deployer.domain import US, PendingNotice, Policy, backoff_delay
from appforge.services.deployer.store import NoticeOutbox
from appforge.services.deployer.timing import Timer, wait_for_event

log = get_logger(__name__)


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
        outbox: NoticeOutbox,
        chat: ChatNotifier,
        clock: Timer,
        poll_interval: float,
        wake: asyncio.Event,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.chat = chat
        self.clock = clock
        self.poll_interval = poll_interval
        self.wake = wake
        self.rng = rng or random.Random()
        self._in_flight = asyncio.Semaphore(16)

    async def run(self) -> None:
        """Deliver until cancelled: whatever is due, then again when woken or a poll passed."""
        while True:
            self.wake.clear()  # before reading, so a notice written meanwhile is not missed
            now_us = self.clock.now_us()
            try:
                await self.deliver_due()
            except Exception as exc:
                log.warning("outbox_read_failed", error=repr(exc))
            await wait_for_event(self.wake, self.clock, now_us + int(self.poll_interval * US))

    async def deliver_due(self) -> int:
        """Claim the due notices and try each once, concurrently, then record those chat
        took in one statement; return how many it took."""
        notices = await self.outbox.claim_notices(self.clock.now_us(), self.CLAIM_LEASE)
        results = await asyncio.gather(*(self._deliver(n) for n in notices))
        taken = [n for n, ok in zip(notices, results, strict=True) if ok]
        if taken:
            await self.outbox.notices_delivered(
                [n.deployment_id for n in taken], self.clock.now_us()
            )
        for pending in taken:
            log.info(
                "notice_delivered",
                deployment_id=pending.deployment_id,
                execution_id=pending.execution_id,
            )
        return len(taken)

    async def _deliver(self, pending: PendingNotice) -> bool:
        async with self._in_flight:
            try:
                await self.chat.notify(
                    app_id=pending.app_id,
                    execution_id=pending.execution_id,
                    failed=pending.notice.failed,
                    metadata=pending.notice.metadata,
                )
            except Exception as exc:
                delay = backoff_delay(pending.tries + 1, self.RETRY, self.rng)
                await self.outbox.notice_failed(
                    pending.deployment_id, repr(exc), self.clock.now_us() + int(delay * US)
                )
                log.warning(
                    "notice_not_delivered",
                    deployment_id=pending.deployment_id,
                    execution_id=pending.execution_id,
                    tries=pending.tries + 1,
                    error=repr(exc),
                )
                return False
            return True
