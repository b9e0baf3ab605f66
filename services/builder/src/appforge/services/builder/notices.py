"""The final notice of an execution: its end, written to its one assistant message.

Built from the builder's tables alone (every tools item with each call as stored, the
message status, metadata naming what went wrong), so anyone can deliver it at any time
and delivering it twice changes nothing. Whoever ends an execution delivers it at once;
the outbox (`deliver_due`, run by every sweeper) delivers what chat did not acknowledge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from appforge.services.builder.domain import (
    ExecutionStatus,
    final_message_status,
    final_metadata,
    tools_items,
)
from appforge.services.builder.ports import ChatPort
from appforge.services.builder.store import ExecutionStore
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

    async def deliver(self, execution_id: str) -> bool:
        """Write the execution's end to chat; False if chat could not take it now."""
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
            delivered += await self.deliver(execution_id)
        return delivered
