"""Every RPC of the three services, found by server reflection, called by every kind of caller
a secure stack must tell apart:

| the token                          | the answer          |
|------------------------------------|---------------------|
| none                               | UNAUTHENTICATED     |
| signed with another key            | UNAUTHENTICATED     |
| expired (the right key)            | UNAUTHENTICATED     |
| of another team                    | NOT_FOUND           |
| a user's, on a service-only RPC    | PERMISSION_DENIED   |
| the right one                      | past the checks     |

The right token is a `service` token of the resource's team on the service-only RPCs
(UpsertAssistantMessage, Deploy, CancelDeployment) and a `user` token of it on every other;
another team's is the same role for another team. Every request names real resources of
team A (an app, the user message and the execution, version and deployment of a build that
ran to its end), and the requests that write would write when allowed (a new app, message,
deployment): every refused call is made first, and the database's row counts and the deploy
root's files are the same after them. Chat, builder and deployer run as processes with an
HS256 secret and mutual TLS; health and reflection answer without a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets as random_secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import grpc
import sqlalchemy as sa
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from appforge.api.flow.v1 import flow_pb2
from appforge.services.common import auth, db
from appforge.services.common.auth import Role
from appforge.services.common.tls import TlsSettings, open_channel
from tests.e2e.conftest import ServiceProcess
from tests.e2e.golden_stack import Security, Stack, StackFactory
from tests.helpers import text_item, watching

CALL_TIMEOUT_S = 10.0
BUILD_TIMEOUT_S = 30.0  # a scripted build, deployed, on 2 cores

CHAT = "appforge.chat.v1.ChatService"
BUILDER = "appforge.builder.v1.BuilderService"
DEPLOYER = "appforge.deployer.v1.DeployerService"

Code = grpc.StatusCode
# What a refusal at the edge answers; any other status means the call got past the checks.
REFUSALS = frozenset({Code.UNAUTHENTICATED, Code.PERMISSION_DENIED, Code.NOT_FOUND})


class Caller(Enum):
    """Who makes the call: the columns of the matrix."""

    NO_TOKEN = "no token"
    OTHER_KEY = "a token signed with another key"
    EXPIRED = "an expired token"
    OTHER_TEAM = "a token of another team"
    USER_ON_SERVICE_ONLY = "a user token on a service-only RPC"
    RIGHT = "the right token"


REFUSED_WITH = {
    Caller.NO_TOKEN: Code.UNAUTHENTICATED,
    Caller.OTHER_KEY: Code.UNAUTHENTICATED,
    Caller.EXPIRED: Code.UNAUTHENTICATED,
    Caller.OTHER_TEAM: Code.NOT_FOUND,
    Caller.USER_ON_SERVICE_ONLY: Code.PERMISSION_DENIED,
}


@dataclass(frozen=True, kw_only=True)
class Built:
    """What the preparation made for team A: one app and a build that was deployed."""

    team: str
    app_id: str
    user_message_id: str
    execution_id: str
    app_version_id: str
    deployment_id: str


@dataclass(frozen=True, kw_only=True)
class Case:
    """How the right caller calls one RPC, and what it gets back."""

    request: Callable[[Built], Message]
    service_only: bool = False  # the right caller is a service, and a user is denied
    answer: Code = Code.OK  # for the right caller; never one of REFUSALS
    to_end: bool = False  # a stream read to its end, not just to its first message

    def callers(self) -> list[Caller]:
        """The refused callers of this RPC: a user's token only where a service's is right."""
        return [
            c for c in REFUSED_WITH if self.service_only or c is not Caller.USER_ON_SERVICE_ONLY
        ]


def _fresh() -> str:
    return str(uuid.uuid4())


PAGE = flow_pb2.File(path="index.html", content=b"<!doctype html><title>matrix</title>")

# Every RPC, by its path: a new one without a case fails the test (its reflected set).
CASES: Mapping[str, Case] = {
    f"/{CHAT}/CreateApp": Case(
        request=lambda b: chat_pb2.CreateAppRequest(team_id=b.team, name=f"matrix-{_fresh()}")
    ),
    f"/{CHAT}/GetApp": Case(request=lambda b: chat_pb2.GetAppRequest(app_id=b.app_id)),
    f"/{CHAT}/PostUserMessage": Case(
        request=lambda b: chat_pb2.PostUserMessageRequest(app_id=b.app_id, content="and a list")
    ),
    f"/{CHAT}/UpsertAssistantMessage": Case(
        request=lambda b: chat_pb2.UpsertAssistantMessageRequest(
            app_id=b.app_id,
            execution_id=_fresh(),  # a new assistant message, were it allowed
            items=[text_item(1, "written by the matrix")],
            status=chat_pb2.MESSAGE_STATUS_PROCESSING,
        ),
        service_only=True,
    ),
    f"/{CHAT}/GetMessage": Case(
        request=lambda b: chat_pb2.GetMessageRequest(message_id=b.user_message_id)
    ),
    f"/{CHAT}/GetMessageByExecution": Case(
        request=lambda b: chat_pb2.GetMessageByExecutionRequest(execution_id=b.execution_id)
    ),
    f"/{CHAT}/ListMessages": Case(request=lambda b: chat_pb2.ListMessagesRequest(app_id=b.app_id)),
    f"/{CHAT}/WatchApp": Case(request=lambda b: chat_pb2.WatchAppRequest(app_id=b.app_id)),
    f"/{BUILDER}/Build": Case(
        request=lambda b: builder_pb2.BuildRequest(app_id=b.app_id, prompt="build a calculator"),
        to_end=True,
    ),
    f"/{BUILDER}/GetExecution": Case(
        request=lambda b: builder_pb2.GetExecutionRequest(execution_id=b.execution_id)
    ),
    f"/{BUILDER}/CancelExecution": Case(
        request=lambda b: builder_pb2.CancelExecutionRequest(
            execution_id=b.execution_id, reason="the matrix"
        ),
        # The execution succeeded: cancelling it is the handler's refusal, not the edge's.
        answer=Code.FAILED_PRECONDITION,
    ),
    f"/{BUILDER}/GetAppVersion": Case(
        request=lambda b: builder_pb2.GetAppVersionRequest(app_version_id=b.app_version_id)
    ),
    f"/{DEPLOYER}/Deploy": Case(
        request=lambda b: deployer_pb2.DeployRequest(
            app_id=b.app_id,
            app_version_id=_fresh(),  # a new deployment, were it allowed
            execution_id=_fresh(),
            files=[PAGE],
        ),
        service_only=True,
    ),
    f"/{DEPLOYER}/GetDeployment": Case(
        request=lambda b: deployer_pb2.GetDeploymentRequest(deployment_id=b.deployment_id)
    ),
    f"/{DEPLOYER}/WatchDeployment": Case(
        request=lambda b: deployer_pb2.WatchDeploymentRequest(deployment_id=b.deployment_id)
    ),
    f"/{DEPLOYER}/CancelDeployment": Case(
        # Finished already: answered as it is.
        request=lambda b: deployer_pb2.CancelDeploymentRequest(
            deployment_id=b.deployment_id, reason="the matrix"
        ),
        service_only=True,
    ),
}


@dataclass(frozen=True, kw_only=True)
class Rpc:
    """One method as a server's reflection describes it."""

    path: str  # "/appforge.chat.v1.ChatService/GetApp"
    input_type: str  # "appforge.chat.v1.GetAppRequest"
    server_streaming: bool
    address: str  # of the server that serves it


async def reflected(channel: grpc.aio.Channel, address: str) -> list[Rpc]:
    """The methods of the appforge services `channel`'s server lists (no token sent)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    services = [
        s.name
        for reply in await _reflect(stub, [listing])
        for s in reply.list_services_response.service
        if s.name.startswith("appforge.")
    ]
    assert services, f"{address} lists no appforge service"
    asked = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in services]
    files: dict[str, FileDescriptorProto] = {}
    for reply in await _reflect(stub, asked):  # each file with the files it imports
        for raw in reply.file_descriptor_response.file_descriptor_proto:
            parsed = FileDescriptorProto.FromString(raw)
            files[parsed.name] = parsed
    rpcs: list[Rpc] = []
    for file in files.values():
        for service in file.service:
            name = f"{file.package}.{service.name}"
            if name in services:
                rpcs.extend(
                    Rpc(
                        path=f"/{name}/{method.name}",
                        input_type=method.input_type.removeprefix("."),
                        server_streaming=method.server_streaming,
                        address=address,
                    )
                    for method in service.method
                )
    return rpcs


async def _reflect(
    stub: reflection_pb2_grpc.ServerReflectionStub,
    requests: Sequence[reflection_pb2.ServerReflectionRequest],
) -> list[reflection_pb2.ServerReflectionResponse]:
    replies = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=CALL_TIMEOUT_S)]
    for reply in replies:
        assert not reply.HasField("error_response"), reply.error_response
    return replies


@dataclass(frozen=True, kw_only=True)
class Tokens:
    """The token each caller presents to an RPC whose right caller has `role`."""

    minter: auth.Minter  # the stack's key
    other_key: auth.Minter  # a random one
    team: str
    other_team: str

    def metadata(self, caller: Caller, role: Role) -> auth.Metadata | None:
        team, other = [self.team], [self.other_team]
        if caller is Caller.NO_TOKEN:
            return None
        if caller is Caller.OTHER_KEY:
            token = self.other_key.token(teams=team, role=role)
        elif caller is Caller.EXPIRED:
            token = self.minter.token(teams=team, role=role, ttl=-60)
        elif caller is Caller.OTHER_TEAM:
            token = self.minter.token(teams=other, role=role)
        elif caller is Caller.USER_ON_SERVICE_ONLY:
            token = self.minter.token(teams=team, role=Role.USER)
        else:
            token = self.minter.token(teams=team, role=role)
        return auth.metadata_of(token)


@dataclass(frozen=True, kw_only=True)
class Matrix:
    """Calls every case's RPC on the server that reflected it, as one caller or another."""

    channels: Mapping[str, grpc.aio.Channel]  # by address, sending no token of their own
    rpcs: Mapping[str, Rpc]  # by path
    tokens: Tokens
    built: Built

    async def refusals(self) -> list[str]:
        """Each refused call that answers otherwise than the matrix says, every RPC in turn."""
        wrong = []
        for path, case in CASES.items():
            for caller in case.callers():
                code, expected = await self.answer(path, caller), REFUSED_WITH[caller]
                if code != expected:
                    wrong.append(f"{path}, {caller.value}: {code.name}, not {expected.name}")
        return wrong

    async def right_answers(self) -> list[str]:
        """Each call of the right caller that does not get the case's answer."""
        wrong = []
        for path, case in CASES.items():
            code = await self.answer(path, Caller.RIGHT)
            if code != case.answer:
                wrong.append(f"{path}, {Caller.RIGHT.value}: {code.name}, not {case.answer.name}")
        return wrong

    async def answer(self, path: str, caller: Caller) -> Code:
        """The status the call ends with: OK for a stream that sent its first message (one
        read `to_end`: that ended well)."""
        rpc, case = self.rpcs[path], CASES[path]
        request = case.request(self.built)
        assert request.DESCRIPTOR.full_name == rpc.input_type, path
        metadata = self.tokens.metadata(caller, Role.SERVICE if case.service_only else Role.USER)
        channel, payload = self.channels[rpc.address], request.SerializeToString()
        try:
            if not rpc.server_streaming:
                await channel.unary_unary(path, None, None)(
                    payload, metadata=metadata, timeout=CALL_TIMEOUT_S
                )
                return Code.OK
            call = channel.unary_stream(path, None, None)(
                payload,
                metadata=metadata,
                timeout=BUILD_TIMEOUT_S if case.to_end else CALL_TIMEOUT_S,
            )
            async for _ in call:
                if not case.to_end:
                    call.cancel()
                    return Code.OK
        except grpc.aio.AioRpcError as exc:
            code: Code = exc.code()
            return code
        return Code.OK


@dataclass(frozen=True, kw_only=True)
class Stored:
    """What is written: the row count of every table, every entry under the deploy root."""

    rows: dict[str, int]
    files: dict[str, str]

    def changes(self, later: Stored) -> list[str]:
        return [
            f"{what} {name}: {before.get(name)} -> {after.get(name)}"
            for what, before, after in (
                ("table", self.rows, later.rows),
                ("file", self.files, later.files),
            )
            for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)
        ]


async def stored(pg_url: str, deploy_root: Path) -> Stored:
    return Stored(rows=await row_counts(pg_url), files=dict(_entries(deploy_root)))


async def row_counts(pg_url: str) -> dict[str, int]:
    """Every table of the database the services use (the session's), with its row count."""
    engine = db.create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.execute(
                    sa.text(
                        "SELECT table_schema, table_name FROM information_schema.tables"
                        " WHERE table_type = 'BASE TABLE'"
                        " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
                    )
                )
            ).all()
            counted = {}
            for schema, table in tables:
                query = sa.text(f'SELECT count(*) FROM "{schema}"."{table}"')
                counted[f"{schema}.{table}"] = int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()
    return counted


def _entries(root: Path) -> Iterator[tuple[str, str]]:
    """Every entry under `root`: a directory, where a link points, a file's digest."""
    for directory, dirs, names in os.walk(root):  # links are not followed
        for name in [*dirs, *names]:
            path = Path(directory, name)
            if path.is_symlink():
                what = f"-> {os.readlink(path)}"
            elif path.is_dir():
                what = "directory"
            else:
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            yield str(path.relative_to(root)), what


async def build_for_team(stack: Stack, team: str) -> Built:
    """An app of `team`, built and deployed (an admin's calls), once everything the build
    sets going is done (the deployment over, chat told of it): from then on only the matrix
    writes."""
    async with (
        stack.channel(stack.chat.address) as chat_channel,
        stack.channel(stack.builder.address) as builder_channel,
        stack.channel(stack.deployer.address) as deployer_channel,
    ):
        chat = chat_pb2_grpc.ChatServiceStub(chat_channel)
        app = await chat.CreateApp(
            chat_pb2.CreateAppRequest(team_id=team, name="the matrix's app"),
            timeout=CALL_TIMEOUT_S,
        )
        async with watching(chat, app.id) as watcher:
            build = builder_pb2.BuildRequest(app_id=app.id, prompt="build a calculator")
            events = [
                e
                async for e in builder_pb2_grpc.BuilderServiceStub(builder_channel).Build(
                    build, timeout=BUILD_TIMEOUT_S
                )
            ]
            started, finished = events[0].started, events[-1].finished
            assert finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED, finished
            watch = deployer_pb2.WatchDeploymentRequest(deployment_id=finished.deployment_id)
            states = [
                s
                async for s in deployer_pb2_grpc.DeployerServiceStub(
                    deployer_channel
                ).WatchDeployment(watch, timeout=BUILD_TIMEOUT_S)
            ]
            assert states[-1].status == deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED, states[-1]
            await watcher.until(
                lambda e: (
                    e.message.execution_id == started.execution_id
                    and _deployment_status(e.message) == "deployed"
                ),
                timeout=BUILD_TIMEOUT_S,
            )
    return Built(
        team=team,
        app_id=app.id,
        user_message_id=started.user_message_id,
        execution_id=started.execution_id,
        app_version_id=finished.app_version_id,
        deployment_id=finished.deployment_id,
    )


def _deployment_status(message: chat_pb2.ChatMessage) -> str:
    """What the deployer told chat of the message's deployment ("" until it has)."""
    told = message.metadata.fields.get("deployment_status")
    return told.string_value if told is not None else ""


@contextlib.asynccontextmanager
async def anonymous_channels(
    security: Security, processes: Sequence[ServiceProcess]
) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """A mutual-TLS channel to each process, by address, that sends no token of its own."""
    tls = TlsSettings.from_env(security.pki.env())
    async with contextlib.AsyncExitStack() as stack:
        yield {
            p.address: await stack.enter_async_context(open_channel(p.address, tls))
            for p in processes
        }


async def test_every_rpc_answers_each_caller_as_the_matrix_says_and_refusals_write_nothing(
    secure_stacks: StackFactory, pg_url: str
) -> None:
    stack = await secure_stacks.stack()
    security = stack.security
    assert security is not None
    processes = [stack.chat, stack.builder, stack.deployer]
    async with anonymous_channels(security, processes) as channels:
        for process in processes:  # open without a token: health, and reflection below
            health = await health_pb2_grpc.HealthStub(channels[process.address]).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING, process.name
        rpcs = {
            rpc.path: rpc
            for process in processes
            for rpc in await reflected(channels[process.address], process.address)
        }
        assert set(rpcs) == set(CASES), "every reflected RPC has a case, and no other"
        assert not [p for p, case in CASES.items() if case.answer in REFUSALS]

        built = await build_for_team(stack, f"team-{uuid.uuid4().hex[:12]}")
        other_key = auth.AuthSettings(secret=random_secrets.token_hex(32).encode()).minter("tests")
        assert other_key is not None
        tokens = Tokens(
            minter=security.minter(),
            other_key=other_key,
            team=built.team,
            other_team=f"other-{built.team}",
        )
        matrix = Matrix(channels=channels, rpcs=rpcs, tokens=tokens, built=built)
        deploy_root = secure_stacks.tmp_path / "deploys"

        before = await stored(pg_url, deploy_root)
        wrong = await matrix.refusals()
        written = before.changes(await stored(pg_url, deploy_root))
        wrong.extend(f"written by a refused call: {change}" for change in written)
        wrong.extend(await matrix.right_answers())
        # The counts are of the services' database: the right callers' writes show.
        assert await row_counts(pg_url) != before.rows
    assert not wrong, "\n".join(wrong)
