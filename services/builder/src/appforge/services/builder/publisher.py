"""Writing an execution's flow: to its one assistant message, then to its Build clients.

Chat is written first, so a Build client never sees an item the message does not hold.
Chat answering with another message than the execution's own would mean a split
execution (the old system's bug: tool completions that each made a new message): it is
counted and logged, never papered over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from appforge.services.builder.domain import BuildEvent, BuildItem, MessageStatus
from appforge.services.builder.metrics import DUPLICATE_MESSAGES
from appforge.services.builder.ports import ChatPort
from appforge.services.common.flow import FlowItem
from appforge.services.common.logging import get_logger

log = get_logger(__name__)

Emit = Callable[[BuildEvent], None]


class FlowPublisher:
    """Publishes one execution's flow items (and message status and metadata)."""

    def __init__(
        self, *, app_id: str, execution_id: str, message_id: str, chat: ChatPort, emit: Emit
    ) -> None:
        self.app_id = app_id
        self.execution_id = execution_id
        self.message_id = message_id
        self.chat = chat
        self.emit = emit

    async def publish(
        self,
        items: Sequence[FlowItem],
        *,
        status: MessageStatus | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Write to the execution's message, then stream the items to Build clients."""
        message_id = await self.chat.upsert(
            app_id=self.app_id,
            execution_id=self.execution_id,
            items=items,
            status=status,
            metadata=metadata,
        )
        if message_id != self.message_id:
            DUPLICATE_MESSAGES.inc()
            log.error(
                "split_execution_detected",
                execution_id=self.execution_id,
                message_id=self.message_id,
                other_message_id=message_id,
            )
        for item in items:
            self.emit(BuildItem(execution_id=self.execution_id, item=item))
