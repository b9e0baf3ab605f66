"""What the builder needs of chat and the deployer, in its own domain's terms.

The use cases (service, runner, publisher, notices) depend on these protocols alone; the gRPC
adapters that implement them live in `clients.py`, and tests hand in fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appforge.services.builder.domain import MessageStatus
from appforge.services.common.flow import FlowItem


@dataclass(frozen=True, kw_only=True)
class UserMessage:
    """A user message as the builder needs it."""

    id: str
    app_id: str
    content: str


class ChatPort(Protocol):
    """What the builder asks of chat."""

    async def post_user_message(self, *, app_id: str, content: str, request_id: str) -> UserMessage:
        """Post the prompt as a user message (idempotent by `request_id` when given)."""
        ...

    async def team_of(self, app_id: str) -> str:
        """The team that owns the app; NotFound if there is no such app, or none the caller
        being served (`auth.caller()`) may see."""
        ...

    async def user_message(self, message_id: str) -> UserMessage:
        """A user message by id; NotFound or FailedPrecondition if it is not one."""
        ...

    async def upsert(
        self,
        *,
        app_id: str,
        execution_id: str,
        items: Sequence[FlowItem] = (),
        status: MessageStatus | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Write to the execution's one assistant message; its id.

        `status` None leaves the message's status as it is; so does an empty `metadata`.
        """
        ...


class DeployerPort(Protocol):
    """What the builder asks of the deployer."""

    async def deploy(
        self,
        *,
        app_id: str,
        app_version_id: str,
        execution_id: str,
        files: Sequence[tuple[str, bytes]],
    ) -> str:
        """Queue the version for deployment (idempotent by version); the deployment id."""
        ...
