"""The gRPC adapters of the builder's ports (`ports.py`) to chat and the deployer.

Only these adapters know protobuf: they convert the domain values the ports speak. Every write to
chat goes by `execution_id` to the execution's one assistant message. Calls
that fail because the other side is down are retried with a short, capped backoff; what is
still down after that surfaces as `Unavailable` and the caller decides (the final notice
outbox tries again later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.services.builder.convert import files_to_proto
from appforge.services.builder.domain import MessageStatus
from appforge.services.builder.ports import UserMessage
from appforge.services.common import auth, deadlines
from appforge.services.common.app_teams import AppTeams
from appforge.services.common.errors import FailedPrecondition, Unavailable
from appforge.services.common.flow import FlowItem
from appforge.services.common.flow_proto import item_to_proto
from appforge.services.common.logging import get_logger
from appforge.services.common.proto import struct
from appforge.services.common.retry import backoff_delay
from appforge.services.common.rpc import LazyChannel, error_from_rpc
from appforge.services.common.tls import TlsSettings

log = get_logger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard to try a call whose callee is down: attempts, capped full-jitter backoff."""

    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    timeout: float = 10.0

    def bounded(self) -> float:
        """One attempt's timeout: `timeout`, or less when the incoming call's deadline is
        sooner (`deadlines.bounded`)."""
        return deadlines.bounded(self.timeout)


async def call_with_retries(
    call: Callable[[], Awaitable[_T]],
    *,
    service: str,
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> _T:
    """`call()`, retried while the callee is UNAVAILABLE; other errors at once."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, service)
            if not isinstance(error, Unavailable) or attempt == policy.attempts:
                raise error from exc
            delay = backoff_delay(
                attempt, initial=policy.initial_backoff, maximum=policy.max_backoff
            )
            log.warning(
                "rpc_retry", service=service, what=what, attempt=attempt, error=error.message
            )
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class GrpcChat(LazyChannel):
    """ChatPort over gRPC. With `minter` (tokens are checked), each call carries a service
    token for the team of the app it touches; the reads made while serving a Build
    (`team_of`, `user_message`) act for the Build's caller, and see what it may see."""

    def __init__(
        self,
        address: str,
        policy: RetryPolicy | None = None,
        *,
        tls: TlsSettings | None = None,
        minter: auth.Minter | None = None,
    ) -> None:
        super().__init__(address, tls)
        self.policy = policy or RetryPolicy()
        self.minter = minter
        self.teams = AppTeams(self.channel, minter, timeout=self.policy.timeout)

    def _stub(self) -> chat_pb2_grpc.ChatServiceAsyncStub:
        return chat_pb2_grpc.ChatServiceStub(self.channel())

    async def _call(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        return await call_with_retries(call, service="chat", what=what, policy=self.policy)

    async def _acting_for_app(self, app_id: str) -> auth.Metadata | None:
        if self.minter is None:
            return None
        return await self._call("get_app", lambda: self.teams.acting_for_app(app_id))

    async def post_user_message(self, *, app_id: str, content: str, request_id: str) -> UserMessage:
        request = chat_pb2.PostUserMessageRequest(
            app_id=app_id, content=content, request_id=request_id
        )
        metadata = await self._acting_for_app(app_id)
        message = await self._call(
            "post_user_message",
            lambda: self._stub().PostUserMessage(
                request, timeout=self.policy.bounded(), metadata=metadata
            ),
        )
        return UserMessage(id=message.id, app_id=message.app_id, content=message.content)

    async def team_of(self, app_id: str) -> str:
        caller = auth.caller()
        return await self._call("get_app", lambda: self.teams.team_of(app_id, caller))

    async def user_message(self, message_id: str) -> UserMessage:
        request = chat_pb2.GetMessageRequest(message_id=message_id)
        metadata = None
        if self.minter is not None:
            metadata = self.minter.acting_for(auth.caller() or auth.SYSTEM)
        message = await self._call(
            "get_message",
            lambda: self._stub().GetMessage(
                request, timeout=self.policy.bounded(), metadata=metadata
            ),
        )
        if message.role != chat_pb2.ROLE_USER:
            raise FailedPrecondition(
                f"message {message_id!r} is not a user message", field="user_message_id"
            )
        return UserMessage(id=message.id, app_id=message.app_id, content=message.content)

    async def upsert(
        self,
        *,
        app_id: str,
        execution_id: str,
        items: Sequence[FlowItem] = (),
        status: MessageStatus | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        request = chat_pb2.UpsertAssistantMessageRequest(
            app_id=app_id,
            execution_id=execution_id,
            items=[item_to_proto(item, execution_id) for item in items],
            status=_message_status(status),
            metadata=struct(metadata) if metadata else None,
            view=chat_pb2.MESSAGE_VIEW_BASIC,  # only the id is read: the smallest reply
        )
        credentials = await self._acting_for_app(app_id)
        message = await self._call(
            "upsert",
            lambda: self._stub().UpsertAssistantMessage(
                request, timeout=self.policy.bounded(), metadata=credentials
            ),
        )
        return message.id


def _message_status(status: MessageStatus | None) -> chat_pb2.MessageStatus.ValueType:
    # By name, not by number: the builder's enum names chat's statuses, it does not own them.
    if status is None:
        return chat_pb2.MESSAGE_STATUS_UNSPECIFIED
    return chat_pb2.MessageStatus.Value(f"MESSAGE_STATUS_{status.name}")


class GrpcDeployer(LazyChannel):
    """DeployerPort over gRPC; with `teams` able to mint, each Deploy carries a service
    token for the team of its app."""

    def __init__(
        self,
        address: str,
        policy: RetryPolicy | None = None,
        *,
        tls: TlsSettings | None = None,
        teams: AppTeams | None = None,
    ) -> None:
        super().__init__(address, tls)
        self.policy = policy or RetryPolicy(attempts=6, max_backoff=5.0, timeout=30.0)
        self.teams = teams

    async def deploy(
        self,
        *,
        app_id: str,
        app_version_id: str,
        execution_id: str,
        files: Sequence[tuple[str, bytes]],
    ) -> str:
        request = deployer_pb2.DeployRequest(
            app_id=app_id,
            app_version_id=app_version_id,
            execution_id=execution_id,
            files=files_to_proto(files),
        )
        stub = deployer_pb2_grpc.DeployerServiceStub(self.channel())
        metadata = None
        if self.teams is not None:
            teams = self.teams
            metadata = await call_with_retries(
                lambda: teams.acting_for_app(app_id),
                service="chat",
                what="get_app",
                policy=self.policy,
            )
        deployment = await call_with_retries(
            lambda: stub.Deploy(request, timeout=self.policy.bounded(), metadata=metadata),
            service="deployer",
            what="deploy",
            policy=self.policy,
        )
        return deployment.id
