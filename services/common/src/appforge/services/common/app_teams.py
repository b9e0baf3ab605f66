"""The team of an app, as chat knows it, for the services that call chat: what their own
tokens must carry to act for the app (`auth.Minter`)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common import deadlines
from appforge.services.common.access import TeamCache
from appforge.services.common.auth import SYSTEM, Metadata, Minter, Principal


class AppTeams:
    """Asks chat's GetApp once per app (an app never changes team), as the caller being
    served when there is one (so the answer is what that caller may see), as the system
    otherwise. Failed calls raise `grpc.aio.AioRpcError`: the caller maps or retries them."""

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        minter: Minter | None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._channel = channel
        self.minter = minter
        self.timeout = timeout
        self._cache = TeamCache()

    async def team_of(self, app_id: str, on_behalf_of: Principal | None = None) -> str:
        team = self._cache.known(app_id)
        if team is not None:
            return team
        metadata = None
        if self.minter is not None:
            metadata = self.minter.acting_for(on_behalf_of or SYSTEM)
        app = await chat_pb2_grpc.ChatServiceStub(self._channel()).GetApp(
            chat_pb2.GetAppRequest(app_id=app_id),
            timeout=deadlines.bounded(self.timeout),
            metadata=metadata,
        )
        self._cache.remember(app_id, app.team_id)
        return app.team_id

    async def acting_for_app(self, app_id: str) -> Metadata | None:
        """Metadata of a service acting for the team of `app_id` (None: tokens are off)."""
        if self.minter is None:
            return None
        return self.minter.metadata([await self.team_of(app_id)])
