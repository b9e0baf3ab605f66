"""Bad input gets a clear status naming the field, and writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.common.settings import Limits
from tests.helpers import call, table_counts, text_item, tools_item, upsert
from tests.integration.conftest import ChatHandle

LIMITS = Limits()
LONG_ID = "x" * (LIMITS.max_id_length + 1)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

# Each case: (id, rpc name, request builder taking (app_id, execution_id), code, field in details)
Build = Callable[[str, str], Any]
CASES: list[tuple[str, str, Build, grpc.StatusCode, str]] = [
    (
        "create-empty-team",
        "CreateApp",
        lambda a, e: chat_pb2.CreateAppRequest(team_id="", name="n"),
        INVALID,
        "team_id",
    ),
    (
        "create-blank-name",
        "CreateApp",
        lambda a, e: chat_pb2.CreateAppRequest(team_id="t", name="  "),
        INVALID,
        "name",
    ),
    (
        "create-long-name",
        "CreateApp",
        lambda a, e: chat_pb2.CreateAppRequest(team_id="t", name="n" * 201),
        INVALID,
        "name",
    ),
    (
        "create-long-team",
        "CreateApp",
        lambda a, e: chat_pb2.CreateAppRequest(team_id=LONG_ID, name="n"),
        INVALID,
        "team_id",
    ),
    ("get-app-empty", "GetApp", lambda a, e: chat_pb2.GetAppRequest(app_id=""), INVALID, "app_id"),
    (
        "get-app-unknown",
        "GetApp",
        lambda a, e: chat_pb2.GetAppRequest(app_id=str(uuid.uuid4())),
        NOT_FOUND,
        "app_id",
    ),
    (
        "post-empty-app",
        "PostUserMessage",
        lambda a, e: chat_pb2.PostUserMessageRequest(app_id="", content="hi"),
        INVALID,
        "app_id",
    ),
    (
        "post-unknown-app",
        "PostUserMessage",
        lambda a, e: chat_pb2.PostUserMessageRequest(app_id=str(uuid.uuid4()), content="hi"),
        NOT_FOUND,
        "app_id",
    ),
    (
        "post-empty-content",
        "PostUserMessage",
        lambda a, e: chat_pb2.PostUserMessageRequest(app_id=a, content=" \n"),
        INVALID,
        "content",
    ),
    (
        "post-huge-content",
        "PostUserMessage",
        lambda a, e: chat_pb2.PostUserMessageRequest(
            app_id=a, content="x" * (LIMITS.max_user_content_bytes + 1)
        ),
        INVALID,
        "content",
    ),
    (
        "post-long-request-id",
        "PostUserMessage",
        lambda a, e: chat_pb2.PostUserMessageRequest(app_id=a, content="hi", request_id=LONG_ID),
        INVALID,
        "request_id",
    ),
    (
        "create-nul-name",
        "CreateApp",
        lambda a, e: chat_pb2.CreateAppRequest(team_id="t", name="calc\x00"),
        INVALID,
        "name",
    ),
    (
        "post-nul-content",
        "PostUserMessage",
        lambda a, e: chat_pb2.PostUserMessageRequest(app_id=a, content="build\x00 it"),
        INVALID,
        "content",
    ),
    (
        "get-app-path-id",
        "GetApp",
        lambda a, e: chat_pb2.GetAppRequest(app_id="../etc"),
        INVALID,
        "app_id",
    ),
    (
        "upsert-nul-text",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, text_item(1, "a\x00b")),
        INVALID,
        "items[0].message.text",
    ),
    (
        "upsert-stamp-nanos",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, _stamped(text_item(1, "x"), 0, -1)),
        INVALID,
        "items[0].timestamp",
    ),
    (
        "upsert-stamp-past-9999",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, _stamped(text_item(1, "x"), 253_402_300_800, 0)),
        INVALID,
        "items[0].timestamp",
    ),
    (
        "upsert-empty-app",
        "UpsertAssistantMessage",
        lambda a, e: upsert("", e, text_item(1, "x")),
        INVALID,
        "app_id",
    ),
    (
        "upsert-empty-execution",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, "", text_item(1, "x")),
        INVALID,
        "execution_id",
    ),
    (
        "upsert-long-execution",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, LONG_ID, text_item(1, "x")),
        INVALID,
        "execution_id",
    ),
    (
        "upsert-padded-execution",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, f" {e}", text_item(1, "x")),
        INVALID,
        "execution_id",
    ),
    (
        "upsert-unknown-app",
        "UpsertAssistantMessage",
        lambda a, e: upsert(str(uuid.uuid4()), e, text_item(1, "x")),
        NOT_FOUND,
        "app_id",
    ),
    (
        "upsert-seq-zero",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, text_item(1, "ok"), text_item(0, "x")),
        INVALID,
        "items[1].seq",
    ),
    (
        "upsert-seq-negative",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, text_item(-3, "x")),
        INVALID,
        "items[0].seq",
    ),
    (
        "upsert-no-body",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, text_item(1, "ok"), flow_pb2.FlowItem(seq=2)),
        INVALID,
        "items[1]",
    ),
    (
        "upsert-foreign-item",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, text_item(1, "x", execution_id="other")),
        INVALID,
        "items[0].execution_id",
    ),
    (
        "upsert-empty-call-id",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, tools_item(1, call(""))),
        INVALID,
        "items[0].tools.calls[0].call_id",
    ),
    (
        "upsert-call-in-two-items",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, tools_item(1, call("c")), tools_item(2, call("c"))),
        INVALID,
        "items[1].tools.calls[0].call_id",
    ),
    (
        "upsert-unknown-tool-status",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, tools_item(1, call("c", 42))),
        INVALID,
        "items[0].tools.calls[0].status",
    ),
    (
        "upsert-unknown-status",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, status=17),
        INVALID,
        "status",
    ),
    (
        "upsert-too-many-items",
        "UpsertAssistantMessage",
        lambda a, e: upsert(
            a, e, *(text_item(n, "x") for n in range(1, LIMITS.max_items_per_upsert + 2))
        ),
        INVALID,
        "items",
    ),
    (
        "upsert-huge-text",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, text_item(1, "x" * (LIMITS.max_text_bytes + 1))),
        INVALID,
        "items[0].message.text",
    ),
    (
        "upsert-too-many-calls",
        "UpsertAssistantMessage",
        lambda a, e: upsert(
            a, e, tools_item(1, *(call(f"c{n}") for n in range(LIMITS.max_calls_per_batch + 1)))
        ),
        INVALID,
        "items[0].tools.calls",
    ),
    (
        "upsert-huge-metadata",
        "UpsertAssistantMessage",
        lambda a, e: upsert(a, e, metadata=_struct(blob="x" * LIMITS.max_metadata_bytes)),
        INVALID,
        "metadata",
    ),
    (
        "get-message-empty",
        "GetMessage",
        lambda a, e: chat_pb2.GetMessageRequest(message_id=""),
        INVALID,
        "message_id",
    ),
    (
        "get-message-unknown",
        "GetMessage",
        lambda a, e: chat_pb2.GetMessageRequest(message_id=str(uuid.uuid4())),
        NOT_FOUND,
        "message_id",
    ),
    (
        "by-execution-empty",
        "GetMessageByExecution",
        lambda a, e: chat_pb2.GetMessageByExecutionRequest(execution_id=""),
        INVALID,
        "execution_id",
    ),
    (
        "by-execution-unknown",
        "GetMessageByExecution",
        lambda a, e: chat_pb2.GetMessageByExecutionRequest(execution_id=e),
        NOT_FOUND,
        "execution_id",
    ),
    (
        "list-unknown-app",
        "ListMessages",
        lambda a, e: chat_pb2.ListMessagesRequest(app_id=str(uuid.uuid4())),
        NOT_FOUND,
        "app_id",
    ),
    (
        "list-page-size",
        "ListMessages",
        lambda a, e: chat_pb2.ListMessagesRequest(app_id=a, page_size=LIMITS.max_page_size + 1),
        INVALID,
        "page_size",
    ),
    (
        "list-bad-token",
        "ListMessages",
        lambda a, e: chat_pb2.ListMessagesRequest(app_id=a, page_token="not-a-token"),
        INVALID,
        "page_token",
    ),
]


@pytest.mark.parametrize(
    ("rpc", "build", "code", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_is_refused_and_writes_nothing(
    chat: ChatHandle, rpc: str, build: Build, code: grpc.StatusCode, field: str
) -> None:
    app = await chat.stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"bad-{uuid.uuid4().hex[:8]}")
    )
    before = await table_counts(chat.runtime.engine)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(chat.stub, rpc)(build(app.id, str(uuid.uuid4())))
    assert err.value.code() == code, err.value.details()
    assert (err.value.details() or "").startswith(f"{field}: "), err.value.details()
    assert await table_counts(chat.runtime.engine) == before


async def test_execution_bound_to_another_app_is_refused(chat: ChatHandle) -> None:
    apps = [
        await chat.stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="t", name=f"own-{uuid.uuid4().hex[:8]}")
        )
        for _ in range(2)
    ]
    execution_id = str(uuid.uuid4())
    original = await chat.stub.UpsertAssistantMessage(
        upsert(apps[0].id, execution_id, text_item(1, "mine"))
    )
    before = await table_counts(chat.runtime.engine)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await chat.stub.UpsertAssistantMessage(
            upsert(apps[1].id, execution_id, text_item(2, "theirs"))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (err.value.details() or "").startswith("execution_id: ")
    assert await table_counts(chat.runtime.engine) == before
    unchanged = await chat.stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
    )
    assert unchanged == original


async def test_item_changing_kind_is_refused_and_rolls_back_the_whole_call(
    chat: ChatHandle,
) -> None:
    app = await chat.stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"kind-{uuid.uuid4().hex[:8]}")
    )
    execution_id = str(uuid.uuid4())
    await chat.stub.UpsertAssistantMessage(upsert(app.id, execution_id, text_item(1, "text")))
    before = await table_counts(chat.runtime.engine)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        # A valid new item first, then a contradiction: neither may land.
        await chat.stub.UpsertAssistantMessage(
            upsert(app.id, execution_id, text_item(2, "new"), tools_item(1, call("c")))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("items[1]: ")
    assert await table_counts(chat.runtime.engine) == before


async def test_request_over_the_transport_limit_is_resource_exhausted(chat: ChatHandle) -> None:
    app = await chat.stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"big-{uuid.uuid4().hex[:8]}")
    )
    before = await table_counts(chat.runtime.engine)
    huge = "x" * (LIMITS.max_grpc_message_bytes + 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await chat.stub.PostUserMessage(
            chat_pb2.PostUserMessageRequest(app_id=app.id, content=huge)
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await table_counts(chat.runtime.engine) == before


def _stamped(item: flow_pb2.FlowItem, seconds: int, nanos: int) -> flow_pb2.FlowItem:
    item.timestamp.seconds, item.timestamp.nanos = seconds, nanos
    return item


async def test_bytes_that_are_not_the_request_are_invalid_argument(chat: ChatHandle) -> None:
    before = await table_counts(chat.runtime.engine)
    create = chat.channel.unary_unary("/appforge.chat.v1.ChatService/CreateApp", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(b"\xff\xff\xff")
    assert err.value.code() == INVALID, err.value.details()
    assert "not this method's request" in (err.value.details() or "")
    assert await table_counts(chat.runtime.engine) == before


def _struct(**values: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out
