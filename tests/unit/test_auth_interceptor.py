"""Tokens at a real server's edge, on loopback: a call without a good token is
UNAUTHENTICATED before any handler runs, one the rules refuse never reaches it, one that
passes finds its caller as a Principal; health stays open; and `open_channel` puts the
credentials on every kind of call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common import auth, secrets
from appforge.services.common.access import (
    ANYONE,
    SYSTEM_ONLY,
    Resource,
    Rule,
    Rules,
    the_team_itself,
)
from appforge.services.common.auth import AuthSettings, Metadata, Principal, Role
from appforge.services.common.server import Context, GrpcServer, ServiceRegistration
from appforge.services.common.settings import Limits
from appforge.services.common.tls import open_channel

CHAT_DESCRIPTOR = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
CHAT = CHAT_DESCRIPTOR.full_name
SECRET = b"0123456789abcdef0123456789abcdef"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210"
APPS = {"a1": "t1", "a2": "t2"}
WAIT = 5.0  # bounds every call: a hang fails the test instead of stalling the run


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


@dataclass(frozen=True, kw_only=True)
class Seen:
    """What one call brought the servicer: its caller and its metadata."""

    method: str
    caller: Principal | None
    metadata: dict[str, str]


class RecordingChat:
    """GetApp and WatchApp over `APPS`, and an UpsertAssistantMessage that answers nothing,
    recording who called and with what (the other RPCs are UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def _record(self, method: str, context: Context) -> None:
        metadata = {
            key: value if isinstance(value, str) else value.decode()
            for key, value in context.invocation_metadata() or ()
        }
        self.seen.append(Seen(method=method, caller=auth.caller(), metadata=metadata))

    async def get_app(self, request: chat_pb2.GetAppRequest, context: Context) -> chat_pb2.App:
        self._record("GetApp", context)
        return chat_pb2.App(id=request.app_id, team_id=APPS[request.app_id], name="calc")

    async def watch_app(
        self, request: chat_pb2.WatchAppRequest, context: Context
    ) -> AsyncIterator[chat_pb2.MessageEvent]:
        self._record("WatchApp", context)
        for cursor in (1, 2):
            yield chat_pb2.MessageEvent(cursor=cursor)

    async def upsert(
        self, request: chat_pb2.UpsertAssistantMessageRequest, context: Context
    ) -> chat_pb2.ChatMessage:
        self._record("UpsertAssistantMessage", context)
        return chat_pb2.ChatMessage()

    def register(self, server: grpc.aio.Server) -> None:
        methods = {
            "GetApp": grpc.unary_unary_rpc_method_handler(
                self.get_app,
                request_deserializer=chat_pb2.GetAppRequest.FromString,
                response_serializer=chat_pb2.App.SerializeToString,
            ),
            "WatchApp": grpc.unary_stream_rpc_method_handler(
                self.watch_app,
                request_deserializer=chat_pb2.WatchAppRequest.FromString,
                response_serializer=chat_pb2.MessageEvent.SerializeToString,
            ),
            "UpsertAssistantMessage": grpc.unary_unary_rpc_method_handler(
                self.upsert,
                request_deserializer=chat_pb2.UpsertAssistantMessageRequest.FromString,
                response_serializer=chat_pb2.ChatMessage.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(CHAT, methods),))


async def team_of_app(app_id: str) -> str | None:
    return APPS.get(app_id)


def rules() -> Rules:
    """Every RPC on an app anyone may call, but CreateApp (on its team) and the
    assistant's message (the services only)."""
    app = Resource(kind="app", field="app_id", team_of=team_of_app)
    table = {m.name: Rule(roles=ANYONE, resource=app) for m in CHAT_DESCRIPTOR.methods}
    table["CreateApp"] = Rule(
        roles=ANYONE, resource=Resource(kind="team", field="team_id", team_of=the_team_itself)
    )
    table["UpsertAssistantMessage"] = Rule(roles=SYSTEM_ONLY, resource=app)
    return table


@dataclass(frozen=True, kw_only=True)
class Served:
    server: GrpcServer
    chat: RecordingChat

    @property
    def address(self) -> str:
        return self.server.address


async def serve(settings: AuthSettings | None) -> Served:
    chat = RecordingChat()
    server = GrpcServer(
        [ServiceRegistration(name=CHAT, register=chat.register, rules=rules())],
        host="127.0.0.1",
        port=0,
        max_message_bytes=4 * 1024 * 1024,
        grace=1.0,
        auth_settings=settings,
        limits=Limits(),
    )
    await server.start()
    return Served(server=server, chat=chat)


@pytest.fixture
async def checked() -> AsyncIterator[Served]:
    """A chat server checking tokens signed with SECRET."""
    served = await serve(AuthSettings(secret=SECRET))
    assert served.server.checks_tokens
    try:
        yield served
    finally:
        await served.server.stop()


@pytest.fixture
async def unchecked() -> AsyncIterator[Served]:
    """A chat server with no key: every caller unchecked."""
    served = await serve(None)
    assert not served.server.checks_tokens
    try:
        yield served
    finally:
        await served.server.stop()


def token(
    *,
    teams: tuple[str, ...] = ("t1",),
    role: Role = Role.USER,
    key: bytes = SECRET,
    ttl: float = 300,
) -> str:
    minter = AuthSettings(secret=key).minter("alice")
    assert minter is not None
    return minter.token(teams=teams, role=role, ttl=ttl)


async def get_app(address: str, app_id: str, metadata: Metadata | None = None) -> chat_pb2.App:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        return await stub.GetApp(
            chat_pb2.GetAppRequest(app_id=app_id), metadata=metadata, timeout=WAIT
        )


async def status_of_get_app(
    address: str, app_id: str, metadata: Metadata | None = None
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_app(address, app_id, metadata)
    return err.value.code(), err.value.details() or ""


async def test_a_call_without_a_token_is_unauthenticated(checked: Served) -> None:
    assert await status_of_get_app(checked.address, "a1") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "this call needs an 'authorization: Bearer <token>' metadata entry",
    )
    assert checked.chat.seen == []


async def test_a_token_signed_with_another_key_is_unauthenticated(checked: Served) -> None:
    forged = token(key=OTHER_SECRET)
    code, details = await status_of_get_app(checked.address, "a1", auth.metadata_of(forged))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert details == "the token is not signed by a key this service trusts"
    assert checked.chat.seen == []


async def test_an_expired_token_is_unauthenticated_without_the_token_in_the_details(
    checked: Served,
) -> None:
    expired = token(ttl=-60)
    code, details = await status_of_get_app(checked.address, "a1", auth.metadata_of(expired))
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "the token has expired")
    assert checked.chat.seen == []


async def test_a_malformed_authorization_is_unauthenticated(checked: Served) -> None:
    metadata = (("authorization", "Basic dXNlcjpwYXNz"),)
    code, _ = await status_of_get_app(checked.address, "a1", metadata)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert checked.chat.seen == []


async def test_a_good_token_reaches_the_servicer_as_its_principal(checked: Served) -> None:
    app = await get_app(checked.address, "a1", auth.metadata_of(token()))
    assert (app.id, app.team_id) == ("a1", "t1")
    [seen] = checked.chat.seen
    assert seen.caller == Principal(subject="alice", role=Role.USER, teams=frozenset({"t1"}))
    assert isinstance(seen.caller, Principal) and seen.caller.role is Role.USER
    # The caller belongs to the call it came with, not to whoever awaited it.
    assert auth.caller() is None


async def test_each_call_finds_its_own_caller(checked: Served) -> None:
    await get_app(checked.address, "a1", auth.metadata_of(token()))
    await get_app(checked.address, "a2", auth.metadata_of(token(teams=(), role=Role.ADMIN)))
    await get_app(checked.address, "a1", auth.metadata_of(token(role=Role.SERVICE)))
    assert [s.caller.role if s.caller else None for s in checked.chat.seen] == [
        Role.USER,
        Role.ADMIN,
        Role.SERVICE,
    ]


async def test_an_app_of_another_team_is_not_found_before_the_servicer(checked: Served) -> None:
    assert await status_of_get_app(checked.address, "a2", auth.metadata_of(token())) == (
        grpc.StatusCode.NOT_FOUND,
        "app_id: no app 'a2'",
    )
    assert checked.chat.seen == []


async def test_a_role_the_rule_does_not_name_is_permission_denied(checked: Served) -> None:
    async with grpc.aio.insecure_channel(checked.address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.UpsertAssistantMessageRequest(app_id="a1", execution_id="e1")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpsertAssistantMessage(
                request, metadata=auth.metadata_of(token()), timeout=WAIT
            )
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert checked.chat.seen == []
        service = token(role=Role.SERVICE)
        await stub.UpsertAssistantMessage(request, metadata=auth.metadata_of(service), timeout=WAIT)
    assert [s.method for s in checked.chat.seen] == ["UpsertAssistantMessage"]


async def test_a_stream_checks_its_token_too(checked: Served) -> None:
    async with grpc.aio.insecure_channel(checked.address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.WatchAppRequest(app_id="a1")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [event async for event in stub.WatchApp(request, timeout=WAIT)]
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert checked.chat.seen == []
        stream = stub.WatchApp(request, metadata=auth.metadata_of(token()), timeout=WAIT)
        assert [event.cursor async for event in stream] == [1, 2]
    [seen] = checked.chat.seen
    assert seen.method == "WatchApp"
    assert seen.caller == Principal(subject="alice", role=Role.USER, teams=frozenset({"t1"}))


async def test_health_needs_no_token(checked: Served) -> None:
    async with grpc.aio.insecure_channel(checked.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", CHAT):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_server_without_a_key_serves_every_caller_unchecked(unchecked: Served) -> None:
    app = await get_app(unchecked.address, "a2")
    assert app.team_id == "t2"
    [seen] = unchecked.chat.seen
    assert seen.caller is None


# --- open_channel ------------------------------------------------------------------------


async def test_open_channel_puts_the_credentials_on_unary_and_streaming_calls(
    unchecked: Served,
) -> None:
    credentials = (("authorization", "Bearer abc.def.ghi"),)
    async with open_channel(unchecked.address, None, credentials=credentials) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        await stub.GetApp(
            chat_pb2.GetAppRequest(app_id="a1"), metadata=(("x-call", "unary"),), timeout=WAIT
        )
        stream = stub.WatchApp(
            chat_pb2.WatchAppRequest(app_id="a1"), metadata=(("x-call", "stream"),), timeout=WAIT
        )
        assert [event.cursor async for event in stream] == [1, 2]
    unary, streaming = unchecked.chat.seen
    assert [s.method for s in unchecked.chat.seen] == ["GetApp", "WatchApp"]
    # The channel's credentials, and each call's own metadata beside them.
    assert (
        unary.metadata["authorization"]
        == streaming.metadata["authorization"]
        == ("Bearer abc.def.ghi")
    )
    assert (unary.metadata["x-call"], streaming.metadata["x-call"]) == ("unary", "stream")


async def test_open_channel_without_credentials_sends_no_authorization(
    unchecked: Served,
) -> None:
    async with open_channel(unchecked.address, None) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        await stub.GetApp(chat_pb2.GetAppRequest(app_id="a1"), timeout=WAIT)
    [seen] = unchecked.chat.seen
    assert "authorization" not in seen.metadata


async def test_a_channel_with_minted_credentials_is_let_through(checked: Served) -> None:
    minter = AuthSettings(secret=SECRET).minter("builder")
    assert minter is not None
    credentials = minter.metadata(["t1"])
    async with open_channel(checked.address, None, credentials=credentials) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        await stub.GetApp(chat_pb2.GetAppRequest(app_id="a1"), timeout=WAIT)
        stream = stub.WatchApp(chat_pb2.WatchAppRequest(app_id="a1"), timeout=WAIT)
        assert [event.cursor async for event in stream] == [1, 2]
    builder = Principal(subject="builder", role=Role.SERVICE, teams=frozenset({"t1"}))
    assert [s.caller for s in checked.chat.seen] == [builder, builder]


# --- the caller, where the rules and the services' own calls need it -----------------------


async def test_the_rule_s_lookup_knows_the_caller() -> None:
    """A lookup asks other services as the caller (the builder's Build asks chat so): the
    caller is set before the rule runs."""
    asked_as: list[Principal | None] = []

    async def recording_team_of(app_id: str) -> str | None:
        asked_as.append(auth.caller())
        return APPS.get(app_id)

    chat = RecordingChat()
    table = dict(rules())
    table["GetApp"] = Rule(
        roles=ANYONE, resource=Resource(kind="app", field="app_id", team_of=recording_team_of)
    )
    server = GrpcServer(
        [ServiceRegistration(name=CHAT, register=chat.register, rules=table)],
        host="127.0.0.1",
        port=0,
        max_message_bytes=4 * 1024 * 1024,
        grace=1.0,
        auth_settings=AuthSettings(secret=SECRET),
    )
    await server.start()
    try:
        await get_app(server.address, "a1", auth.metadata_of(token()))
    finally:
        await server.stop()
    assert [p.subject if p else None for p in asked_as] == ["alice"]


async def test_app_teams_asks_as_the_caller_and_remembers(unchecked: Served) -> None:
    from appforge.services.common.app_teams import AppTeams

    minter = AuthSettings(secret=SECRET).minter("appforge-builder")
    async with grpc.aio.insecure_channel(unchecked.address) as channel:
        teams = AppTeams(lambda: channel, minter, timeout=WAIT)
        bob = Principal(subject="bob", role=Role.USER, teams=frozenset({"t1", "t3"}))
        assert await teams.team_of("a1", bob) == "t1"
        assert await teams.team_of("a1") == "t1"  # remembered: not asked again
        assert await teams.team_of("a2") == "t2"  # no caller: as the system
        assert await teams.acting_for_app("a2") is not None
    seen = [s for s in unchecked.chat.seen if s.method == "GetApp"]
    assert len(seen) == 2
    verifier = AuthSettings(secret=SECRET).verifier()
    as_bob, as_system = (verifier.verify(auth.bearer(s.metadata.items())) for s in seen)
    assert (as_bob.role, as_bob.teams) == (Role.SERVICE, frozenset({"t1", "t3"}))
    assert (as_system.role, as_system.teams) == (Role.ADMIN, frozenset())
