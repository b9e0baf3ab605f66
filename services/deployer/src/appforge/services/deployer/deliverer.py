"""The notice deliverer: sends the outbox's notices to chat until chat acknowledges each one."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from appforge.services.common.batching import WriteBatcher
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
        # Notices chat took, recorded together: alone when nothing is being recorded, else
        # in one statement with the others that came meanwhile.
        self._delivered: WriteBatcher[str, None] = WriteBatcher(
            self._record_delivered,
            key=lambda deployment_id: deployment_id,
            in_flight=1,
            max_size=200,
        )
        self._handed: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Deliver until cancelled: whatever is due, then again when woken or a poll passed."""
        try:
            while True:
                self.wake.clear()  # before reading, so a notice written meanwhile is not missed
                now_us = self.clock.now_us()
                try:
                    await self.deliver_due()
                except Exception as exc:
                    log.warning("outbox_read_failed", error=repr(exc))
                await wait_for_event(self.wake, self.clock, now_us + int(self.poll_interval * US))
        finally:
            for task in self._handed:
                task.cancel()
            await asyncio.gather(*self._handed, return_exceptions=True)

    def deliver(self, notice: PendingNotice) -> None:
        """Deliver, now, a notice queued held for this process (a worker's success): no
        round trip to find it. Should this process die first, its hold ends and any
        deliverer sends it."""
        task = asyncio.get_running_loop().create_task(self._deliver_held(notice))
        self._handed.add(task)
        task.add_done_callback(self._handed.discard)

    async def settled(self) -> None:
        """Wait until every notice handed so far was delivered and recorded, or given up on
        (then sent again once its hold is over)."""
        while self._handed:
            await asyncio.gather(*self._handed, return_exceptions=True)

    def due(self) -> None:
        """A notice was queued due: look for it now rather than at the next poll."""
        self.wake.set()

    async def deliver_due(self) -> int:
        """Claim the due notices and try each once, concurrently; return how many chat took
        (each recorded as delivered)."""
        notices = await self.outbox.claim_notices(self.clock.now_us(), self.CLAIM_LEASE)
        results = await asyncio.gather(*(self._deliver(n) for n in notices))
        return sum(results)

    async def _deliver_held(self, pending: PendingNotice) -> None:
        try:
            await self._deliver(pending)
        except Exception as exc:  # not recorded (the database is down): sent again later
            log.warning(
                "notice_not_recorded",
                deployment_id=pending.deployment_id,
                execution_id=pending.execution_id,
                error=repr(exc),
            )

    async def _record_delivered(self, deployment_ids: Sequence[str]) -> list[None]:
        await self.outbox.notices_delivered(deployment_ids, self.clock.now_us())
        return [None] * len(deployment_ids)

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
        await self._delivered.submit(pending.deployment_id)
        log.info(
            "notice_delivered",
            deployment_id=pending.deployment_id,
            execution_id=pending.execution_id,
        )
        return True
