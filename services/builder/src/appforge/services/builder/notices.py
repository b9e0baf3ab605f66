"""The final notice of an execution: its end, written to its one assistant message.

Built from the builder's tables alone (every tools item with each call as stored, the
message status, metadata naming what went wrong), so anyone can deliver it at any time
and delivering it twice changes nothing. Whoever ends an execution delivers it at once;
the outbox (`deliver_due`, run by every sweeper) delivers what chat did not acknowledge.
A notice this replica could not deliver at once is announced on the bus (`announce`), and
every other replica tries the outbox then instead of at its next sweep: chat may answer
them (a replica cut off from chat, or one shutting down, leaves nothing waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from appforge.services.builder.domain import (
    ExecutionStatus,
    final_message_status,
    final_metadata,
    tools_items,
)
from appforge.services.builder.ports import ChatPort
from appforge.services.builder.store import ExecutionStore
from appforge.services.common import keys
from appforge.services.common.bus import Bus
from appforge.services.common.clock import Clock
from appforge.services.common.errors import AppforgeError, Unavailable
from appforge.services.common.flow import FlowItem
from appforge.services.common.logging import get_logger

log = get_logger(__name__)

Delivered = Callable[[str, Sequence[FlowItem]], None]


class FinalNotices:
    """Delivers final notices; `on_delivered` sees the items each one carried."""

    def __init__(
        self,
        store: ExecutionStore,
        chat: ChatPort,
        clock: Clock,
        *,
        json_limit: int,
        retry_after: float = 5.0,
        on_delivered: Delivered | None = None,
    ) -> None:
        self.store = store
        self.chat = chat
        self.clock = clock
        self.json_limit = json_limit
        self.retry_after = retry_after
        self.on_delivered = on_delivered
        # Tells the other replicas a notice is left (set by the runtime, with a bus).
        self.announce: Callable[[str], Awaitable[None]] | None = None

    async def deliver(self, execution_id: str, *, announce: bool = True) -> bool:
        """Write the execution's end to chat; False if chat could not take it now (then,
        with `announce`, the other replicas are told)."""
        execution = await self.store.get(execution_id)
        if execution.status is ExecutionStatus.RUNNING:
            raise ValueError(f"execution {execution_id} has not ended")
        calls = await self.store.calls(execution_id)
        items = tools_items(calls, self.json_limit)
        try:
            await self.chat.upsert(
                app_id=execution.app_id,
                execution_id=execution_id,
                items=items,
                status=final_message_status(execution.status),
                metadata=final_metadata(execution, calls),
            )
        except Unavailable as exc:
            log.warning("final_notice_deferred", execution_id=execution_id, error=exc.message)
            if announce and self.announce is not None:
                await self.announce(execution_id)
            return False
        except AppforgeError as exc:
            # Chat refuses it for good (an app deleted, say): retrying cannot help.
            log.error("final_notice_refused", execution_id=execution_id, error=str(exc))
        await self.store.mark_notified(execution_id, self.clock.now_us())
        if self.on_delivered is not None:
            self.on_delivered(execution_id, items)
        return True

    async def deliver_due(self, limit: int = 50) -> int:
        """Deliver the notices whose time has come; how many chat took."""
        due = await self.store.claim_notices(
            self.clock.now_us(), retry_after_us=round(self.retry_after * 1_000_000), limit=limit
        )
        delivered = 0
        for execution_id in due:
            # Not announced again: what the outbox retries, every replica retries too.
            delivered += await self.deliver(execution_id, announce=False)
        return delivered


async def listen_for_notices(
    bus: Bus, notices: FinalNotices, owner: str, *, retry: float = 1.0
) -> None:
    """Try the outbox whenever another replica announced a notice it could not deliver
    (payload: `owner execution_id`; this replica's own announcements are ignored). Bursts
    coalesce: one `deliver_due` at a time, one more if announcements came meanwhile."""
    due = asyncio.Event()

    async def deliver_when_due() -> None:
        while True:
            await due.wait()
            due.clear()
            try:
                await notices.deliver_due()
            except Exception as exc:  # the sweeper tries again in any case
                log.warning("announced_notices_not_delivered", error=repr(exc))

    delivering = asyncio.create_task(deliver_when_due(), name="builder-announced-notices")
    try:
        while True:
            try:
                async with bus.subscribe(keys.builder_notices_channel()) as announced:
                    async for payload in announced:
                        if payload is None or not payload.decode().startswith(f"{owner} "):
                            due.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notice_announcements_unavailable", error=repr(exc), retry_s=retry)
                await asyncio.sleep(retry)
    finally:
        delivering.cancel()
        await asyncio.gather(delivering, return_exceptions=True)


def announcer(bus: Bus, owner: str) -> Callable[[str], Awaitable[None]]:
    """What `FinalNotices.announce` calls: publish `owner execution_id`."""

    async def announce(execution_id: str) -> None:
        try:
            await bus.publish(keys.builder_notices_channel(), f"{owner} {execution_id}".encode())
        except Exception as exc:  # the sweepers find it anyway
            log.warning("notice_announcement_failed", execution_id=execution_id, error=repr(exc))

    return announce
