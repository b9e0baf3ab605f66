"""`access`: the rule of each RPC applied to a verified caller. A role that may not make the
call is PERMISSION_DENIED before anything is looked up; a resource of another team is
NOT_FOUND in the words of a missing id; an admin is not looked up at all; the rule table
names every RPC of the service."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from appforge.api.chat.v1 import chat_pb2
from appforge.services.chat.rules import rules as chat_rules
from appforge.services.chat.service import ChatService
from appforge.services.common import secrets
from appforge.services.common.access import (
    ANYONE,
    SYSTEM_ONLY,
    Guard,
    Remembered,
    Resource,
    Rule,
    Rules,
    TeamCache,
    check_complete,
    missing_as_none,
    the_team_itself,
)
from appforge.services.common.auth import AuthSettings, Principal, Role
from appforge.services.common.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from appforge.services.common.server import grpc_status
from appforge.services.common.settings import Limits

CHAT = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
SECRET = b"0123456789abcdef0123456789abcdef"

ALICE = Principal(subject="alice", role=Role.USER, teams=frozenset({"t1"}))
MALLORY = Principal(subject="mallory", role=Role.USER, teams=frozenset({"t2"}))
BUILDER = Principal(subject="builder", role=Role.SERVICE, teams=frozenset({"t1"}))
ROOT = Principal(subject="root", role=Role.ADMIN)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


class Teams:
    """A fake lookup: the team of each id it knows, and every id it was asked for."""

    def __init__(self, teams: dict[str, str]) -> None:
        self.teams = teams
        self.asked: list[str] = []

    async def __call__(self, resource_id: str) -> str | None:
        self.asked.append(resource_id)
        return self.teams.get(resource_id)


@dataclass(kw_only=True)
class Table:
    """A rule for every ChatService RPC, over fake lookups of apps, messages and
    executions."""

    apps: Teams
    messages: Teams
    executions: Teams

    @property
    def lookups(self) -> tuple[Teams, ...]:
        return (self.apps, self.messages, self.executions)

    def rules(self) -> Rules:
        app = Resource(kind="app", field="app_id", team_of=self.apps)
        message = Resource(kind="message", field="message_id", team_of=self.messages)
        execution = Resource(
            kind="message for execution", field="execution_id", team_of=self.executions
        )
        team = Resource(kind="team", field="team_id", team_of=the_team_itself)
        return {
            "CreateApp": Rule(roles=ANYONE, resource=team),
            "GetApp": Rule(roles=ANYONE, resource=app),
            "PostUserMessage": Rule(roles=ANYONE, resource=app),
            "UpsertAssistantMessage": Rule(roles=SYSTEM_ONLY, resource=app),
            "GetMessage": Rule(roles=ANYONE, resource=message),
            "GetMessageByExecution": Rule(roles=ANYONE, resource=execution),
            "ListMessages": Rule(roles=ANYONE, resource=app),
            "WatchApp": Rule(roles=ANYONE, resource=app),
        }


@pytest.fixture
def table() -> Table:
    return Table(
        apps=Teams({"a1": "t1", "a2": "t2"}),
        messages=Teams({"m1": "t1"}),
        executions=Teams({"e1": "t1"}),
    )


def guard_of(rules: Rules) -> Guard:
    verifier = AuthSettings(secret=SECRET).verifier()
    return Guard.over(verifier, [(CHAT, rules)], Limits())


@pytest.fixture
def guard(table: Table) -> Guard:
    return guard_of(table.rules())


def method(name: str) -> str:
    return f"/{CHAT}/{name}"


async def refused(guard: Guard, name: str, request: Any, principal: Principal) -> Exception:
    with pytest.raises((NotFound, PermissionDenied, InvalidArgument)) as err:
        await guard.authorize(method(name), request, principal)
    return err.value


# --- roles -------------------------------------------------------------------------------


async def test_a_role_the_rule_does_not_name_is_denied_before_any_lookup(
    guard: Guard, table: Table
) -> None:
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a1", execution_id="e1")
    error = await refused(guard, "UpsertAssistantMessage", request, ALICE)
    assert isinstance(error, PermissionDenied)
    assert str(error) == (
        "UpsertAssistantMessage needs the role admin or service; the token's role is user"
    )
    assert all(lookup.asked == [] for lookup in table.lookups)


async def test_the_role_is_denied_whatever_the_resource(guard: Guard, table: Table) -> None:
    # Of its own team, of another, missing, or not even an id: the same answer.
    for app_id in ("a1", "a2", "missing", "", ".."):
        request = chat_pb2.UpsertAssistantMessageRequest(app_id=app_id)
        error = await refused(guard, "UpsertAssistantMessage", request, ALICE)
        assert isinstance(error, PermissionDenied)
    assert table.apps.asked == []


async def test_a_service_of_the_team_may_write_the_assistant_message(
    guard: Guard, table: Table
) -> None:
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a1", execution_id="e1")
    await guard.authorize(method("UpsertAssistantMessage"), request, BUILDER)
    assert table.apps.asked == ["a1"]


# --- teams -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "request_"),
    [
        pytest.param("GetApp", chat_pb2.GetAppRequest(app_id="a1"), id="get-app"),
        pytest.param("WatchApp", chat_pb2.WatchAppRequest(app_id="a1"), id="watch-app"),
        pytest.param("ListMessages", chat_pb2.ListMessagesRequest(app_id="a1"), id="list"),
        pytest.param(
            "PostUserMessage",
            chat_pb2.PostUserMessageRequest(app_id="a1", content="hi"),
            id="post",
        ),
        pytest.param("GetMessage", chat_pb2.GetMessageRequest(message_id="m1"), id="message"),
        pytest.param(
            "GetMessageByExecution",
            chat_pb2.GetMessageByExecutionRequest(execution_id="e1"),
            id="by-execution",
        ),
        pytest.param(
            "CreateApp", chat_pb2.CreateAppRequest(team_id="t1", name="calc"), id="create"
        ),
    ],
)
async def test_a_user_of_the_team_may_and_one_of_another_may_not(
    guard: Guard, name: str, request_: Any
) -> None:
    await guard.authorize(method(name), request_, ALICE)
    assert isinstance(await refused(guard, name, request_, MALLORY), NotFound)


async def test_another_teams_resource_is_not_found_in_the_words_of_a_missing_one(
    guard: Guard, table: Table
) -> None:
    request = chat_pb2.GetAppRequest(app_id="a1")
    of_another_team = await refused(guard, "GetApp", request, MALLORY)
    del table.apps.teams["a1"]
    missing = await refused(guard, "GetApp", request, MALLORY)
    assert isinstance(of_another_team, NotFound) and isinstance(missing, NotFound)
    assert str(of_another_team) == str(missing) == "app_id: no app 'a1'"
    assert of_another_team.field == missing.field == "app_id"
    # What the client sees is the same too.
    assert grpc_status(of_another_team) == grpc_status(missing)


async def test_a_missing_message_is_not_found_naming_its_field(guard: Guard) -> None:
    request = chat_pb2.GetMessageByExecutionRequest(execution_id="e9")
    error = await refused(guard, "GetMessageByExecution", request, ALICE)
    assert str(error) == "execution_id: no message for execution 'e9'"


async def test_a_service_acts_only_for_its_teams(guard: Guard) -> None:
    await guard.authorize(method("GetApp"), chat_pb2.GetAppRequest(app_id="a1"), BUILDER)
    request = chat_pb2.GetAppRequest(app_id="a2")
    assert isinstance(await refused(guard, "GetApp", request, BUILDER), NotFound)


async def test_a_caller_of_no_team_is_refused_everything(guard: Guard) -> None:
    nobody = Principal(subject="nobody", role=Role.USER)
    request = chat_pb2.CreateAppRequest(team_id="t1", name="calc")
    error = await refused(guard, "CreateApp", request, nobody)
    assert str(error) == "team_id: no team 't1'"


async def test_an_admin_is_not_looked_up(guard: Guard, table: Table) -> None:
    for name, request in (
        ("GetApp", chat_pb2.GetAppRequest(app_id="a2")),
        ("GetApp", chat_pb2.GetAppRequest(app_id="missing")),  # the handler says NOT_FOUND
        ("UpsertAssistantMessage", chat_pb2.UpsertAssistantMessageRequest(app_id="a1")),
        ("GetMessage", chat_pb2.GetMessageRequest(message_id="m1")),
    ):
        await guard.authorize(method(name), request, ROOT)
    assert all(lookup.asked == [] for lookup in table.lookups)


# --- ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "a\\b", " a1", "x" * 129])
@pytest.mark.parametrize("caller", ["alice", "admin"])
async def test_an_invalid_id_is_refused_naming_the_field_before_any_lookup(
    guard: Guard, table: Table, bad: str, caller: str
) -> None:
    who = ALICE if caller == "alice" else ROOT
    error = await refused(guard, "GetApp", chat_pb2.GetAppRequest(app_id=bad), who)
    assert isinstance(error, InvalidArgument)
    assert error.field == "app_id"
    assert str(error).startswith("app_id: ")
    error = await refused(guard, "GetMessage", chat_pb2.GetMessageRequest(message_id=bad), who)
    assert isinstance(error, InvalidArgument) and error.field == "message_id"
    assert all(lookup.asked == [] for lookup in table.lookups)


# --- the rule table ----------------------------------------------------------------------


def test_a_table_of_every_rpc_is_complete(table: Table) -> None:
    check_complete(CHAT, table.rules())


def test_a_table_without_an_rpc_is_refused(table: Table) -> None:
    rules = {k: v for k, v in table.rules().items() if k != "WatchApp"}
    with pytest.raises(ConfigError) as err:
        check_complete(CHAT, rules)
    assert str(err.value) == (
        f"{CHAT}: the rule table must name every RPC once (no rule: WatchApp; no such RPC: -)"
    )


def test_a_table_naming_an_rpc_the_service_lacks_is_refused(table: Table) -> None:
    rules = {**table.rules(), "DeleteApp": table.rules()["GetApp"]}
    with pytest.raises(ConfigError) as err:
        check_complete(CHAT, rules)
    assert str(err.value) == (
        f"{CHAT}: the rule table must name every RPC once (no rule: -; no such RPC: DeleteApp)"
    )


def test_the_method_name_is_the_protos_not_the_pythons(table: Table) -> None:
    rules = {k: v for k, v in table.rules().items() if k != "GetApp"}
    with pytest.raises(ConfigError, match="no rule: GetApp; no such RPC: get_app"):
        check_complete(CHAT, {**rules, "get_app": table.rules()["GetApp"]})


# --- lookups -----------------------------------------------------------------------------


async def test_remembered_keeps_what_it_found_and_asks_again_for_what_it_did_not() -> None:
    lookup = Teams({"a1": "t1"})
    remembered = Remembered(lookup)
    assert [await remembered("a1") for _ in range(3)] == ["t1"] * 3
    assert lookup.asked == ["a1"]
    assert [await remembered("a9") for _ in range(2)] == [None, None]
    assert lookup.asked == ["a1", "a9", "a9"]
    # A missing id may be created later: then it is found, and kept.
    lookup.teams["a9"] = "t2"
    assert [await remembered("a9") for _ in range(2)] == ["t2", "t2"]
    assert lookup.asked == ["a1", "a9", "a9", "a9"]


async def test_remembered_asks_again_for_what_its_cache_let_go() -> None:
    lookup = Teams({"a1": "t1", "a2": "t2"})
    remembered = Remembered(lookup, size=1)
    await remembered("a1")
    await remembered("a2")
    await remembered("a1")
    assert lookup.asked == ["a1", "a2", "a1"]


def test_team_cache_lets_go_of_the_least_recently_used_past_its_size() -> None:
    cache = TeamCache(size=2)
    cache.remember("a1", "t1")
    cache.remember("a2", "t2")
    assert cache.known("a1") == "t1"  # a1 now the most recently used: a2 goes first
    cache.remember("a3", "t3")
    assert cache.known("a2") is None
    assert (cache.known("a1"), cache.known("a3")) == ("t1", "t3")
    cache.remember("a4", "t4")
    assert cache.known("a1") is None
    assert (cache.known("a3"), cache.known("a4")) == ("t3", "t4")


def test_team_cache_knows_nothing_it_was_not_told() -> None:
    assert TeamCache().known("a1") is None


async def test_missing_as_none_answers_none_for_not_found() -> None:
    async def lookup(resource_id: str) -> str | None:
        if resource_id == "a1":
            return "t1"
        raise NotFound(f"no app {resource_id!r}", field="app_id")

    team_of = missing_as_none(lookup)
    assert (await team_of("a1"), await team_of("a9")) == ("t1", None)


async def test_missing_as_none_lets_other_errors_through() -> None:
    async def lookup(resource_id: str) -> str | None:
        raise InvalidArgument("must not be empty", field="app_id")

    with pytest.raises(InvalidArgument):
        await missing_as_none(lookup)("")


async def test_a_team_is_its_own_resource() -> None:
    assert await the_team_itself("t1") == "t1"


# --- the chat service's own table ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FakeApp:
    team_id: str


@dataclass(frozen=True, kw_only=True)
class FakeMessage:
    app_id: str


class FakeChat:
    """The reads chat's rules make of its service, over dicts, counting each."""

    def __init__(self) -> None:
        self.apps = {"a1": "t1"}
        self.messages = {"m1": "a1"}
        self.executions = {"e1": "a1"}
        self.reads: list[str] = []

    async def get_app(self, app_id: str) -> FakeApp:
        self.reads.append(f"app {app_id}")
        if app_id not in self.apps:
            raise NotFound(f"no app {app_id!r}", field="app_id")
        return FakeApp(team_id=self.apps[app_id])

    async def get_message(self, message_id: str) -> FakeMessage:
        self.reads.append(f"message {message_id}")
        if message_id not in self.messages:
            raise NotFound(f"no message {message_id!r}", field="message_id")
        return FakeMessage(app_id=self.messages[message_id])

    async def get_message_by_execution(self, execution_id: str) -> FakeMessage:
        self.reads.append(f"execution {execution_id}")
        if execution_id not in self.executions:
            raise NotFound(f"no message for execution {execution_id!r}", field="execution_id")
        return FakeMessage(app_id=self.executions[execution_id])


def test_chats_table_names_every_rpc() -> None:
    check_complete(CHAT, chat_rules(cast(ChatService, FakeChat())))


async def test_chats_table_finds_a_messages_team_through_its_app_once() -> None:
    chat = FakeChat()
    guard = guard_of(chat_rules(cast(ChatService, chat)))
    get_message = chat_pb2.GetMessageRequest(message_id="m1")
    by_execution = chat_pb2.GetMessageByExecutionRequest(execution_id="e1")
    await guard.authorize(method("GetMessage"), get_message, ALICE)
    await guard.authorize(method("GetMessageByExecution"), by_execution, ALICE)
    await guard.authorize(method("GetApp"), chat_pb2.GetAppRequest(app_id="a1"), ALICE)
    await guard.authorize(method("GetMessage"), get_message, ALICE)
    assert chat.reads == ["message m1", "app a1", "execution e1"]
    assert isinstance(await refused(guard, "GetMessage", get_message, MALLORY), NotFound)


async def test_chats_table_refuses_a_missing_app_as_the_store_would() -> None:
    guard = guard_of(chat_rules(cast(ChatService, FakeChat())))
    error = await refused(guard, "ListMessages", chat_pb2.ListMessagesRequest(app_id="a9"), ALICE)
    assert str(error) == "app_id: no app 'a9'"
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a1", execution_id="e1")
    assert isinstance(
        await refused(guard, "UpsertAssistantMessage", request, ALICE), PermissionDenied
    )
