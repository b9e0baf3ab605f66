"""The deployer's way to the chat service: a notice becomes an UpsertAssistantMessage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common import auth, deadlines
from appforge.services.common.app_teams import AppTeams
from appforge.services.common.proto import struct
from appforge.services.common.rpc import LazyChannel
from appforge.services.common.tls import TlsSettings


class GrpcChatNotifier(LazyChannel):
    """Updates the execution's message by execution_id, never "the latest message"; with
    `minter`, as a service of the app's team (`teams` knows it)."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 10.0,
        tls: TlsSettings | None = None,
        minter: auth.Minter | None = None,
    ) -> None:
        super().__init__(address, tls)
        self.timeout = timeout
        self.teams = AppTeams(self.channel, minter, timeout=timeout)

    def _stub(self) -> chat_pb2_grpc.ChatServiceAsyncStub:
        return chat_pb2_grpc.ChatServiceStub(self.channel())

    async def notify(
        self, *, app_id: str, execution_id: str, failed: bool, metadata: Mapping[str, Any]
    ) -> None:
        credentials = await self.teams.acting_for_app(app_id)
        await self._stub().UpsertAssistantMessage(
            chat_pb2.UpsertAssistantMessageRequest(
                app_id=app_id,
                execution_id=execution_id,
                # A deployment's end is the message's end: COMPLETED is a no-op where the
                # builder completed it already, and ends one that only a Deploy sent by hand
                # created (it would stay PENDING for ever otherwise).
                status=(
                    chat_pb2.MESSAGE_STATUS_FAILED if failed else chat_pb2.MESSAGE_STATUS_COMPLETED
                ),
                metadata=struct(metadata),
                view=chat_pb2.MESSAGE_VIEW_BASIC,  # the reply is not read: the smallest one
            ),
            timeout=deadlines.bounded(self.timeout),
            metadata=credentials,
        )
