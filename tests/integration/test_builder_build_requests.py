"""What a Build request may name, and what the builder refuses over gRPC: building from an
existing user message, request ids, bad fields, unknown ids and a cancel that comes too late."""

from __future__ import annotations

import grpc
import pytest

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from tests.helpers import table_counts
from tests.integration.builder_fixtures import BuilderHandle, collect
from tests.integration.builder_service_helpers import assistant_messages, build
from tests.integration.conftest import ChatHandle, NewApp


async def test_build_from_an_existing_user_message_and_only_once(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    user = await chat.stub.PostUserMessage(
        chat_pb2.PostUserMessageRequest(app_id=app.id, content="a todo list please")
    )
    request = builder_pb2.BuildRequest(app_id=app.id, user_message_id=user.id)
    events = await collect(builder.stub.Build(request))
    assert events[0].started.user_message_id == user.id
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED
    version = await builder.stub.GetAppVersion(
        builder_pb2.GetAppVersionRequest(app_version_id=events[-1].finished.app_version_id)
    )
    assert b"todo" in {f.path: f.content for f in version.files}["index.html"].lower()
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await collect(builder.stub.Build(request))
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert events[0].started.execution_id in (again.value.details() or "")


async def test_a_request_id_makes_a_retried_build_start_nothing_new(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    first = await collect(builder.stub.Build(build(app.id, request_id="req-1")))
    with pytest.raises(grpc.aio.AioRpcError) as retried:
        await collect(builder.stub.Build(build(app.id, request_id="req-1")))
    assert retried.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first[0].started.execution_id in (retried.value.details() or "")
    assert len(await assistant_messages(chat, app.id)) == 1


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"app_id": "", "prompt": "hi"}, grpc.StatusCode.INVALID_ARGUMENT, "app_id"),
        ({"prompt": ""}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ({"prompt": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ({"prompt": "x" * 70_000}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ({"prompt": "hi", "model": "gpt-9"}, grpc.StatusCode.INVALID_ARGUMENT, "model"),
        ({"prompt": "hi", "model": "openai"}, grpc.StatusCode.FAILED_PRECONDITION, "model"),
        ({"app_id": "no-such-app", "prompt": "hi"}, grpc.StatusCode.NOT_FOUND, ""),
        ({"user_message_id": "no-such-message"}, grpc.StatusCode.NOT_FOUND, ""),
    ],
)
async def test_bad_build_requests_get_a_clear_status_and_start_nothing(
    builder: BuilderHandle,
    chat: ChatHandle,
    new_app: NewApp,
    request_fields: dict[str, str],
    code: grpc.StatusCode,
    field: str,
) -> None:
    app = await new_app()
    fields = {"app_id": app.id, **request_fields}
    before = await table_counts(builder.runtime.engine)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(builder.stub.Build(builder_pb2.BuildRequest(**fields)))
    assert caught.value.code() == code, caught.value.details()
    assert (caught.value.details() or "").startswith(field)
    assert await table_counts(builder.runtime.engine) == before
    assert await assistant_messages(chat, app.id) == []


async def test_a_user_message_of_another_app_is_refused(
    builder: BuilderHandle, chat: ChatHandle, new_app: NewApp
) -> None:
    mine, other = await new_app(), await new_app()
    user = await chat.stub.PostUserMessage(
        chat_pb2.PostUserMessageRequest(app_id=other.id, content="a counter")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(
            builder.stub.Build(builder_pb2.BuildRequest(app_id=mine.id, user_message_id=user.id))
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (caught.value.details() or "").startswith("user_message_id")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("GetExecution", grpc.StatusCode.NOT_FOUND),
        ("CancelExecution", grpc.StatusCode.NOT_FOUND),
        ("GetAppVersion", grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_unknown_ids_are_not_found(
    builder: BuilderHandle, call: str, code: grpc.StatusCode
) -> None:
    requests = {
        "GetExecution": builder_pb2.GetExecutionRequest(execution_id="nope"),
        "CancelExecution": builder_pb2.CancelExecutionRequest(execution_id="nope"),
        "GetAppVersion": builder_pb2.GetAppVersionRequest(app_version_id="nope"),
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(builder.stub, call)(requests[call])
    assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await getattr(builder.stub, call)(type(requests[call])())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancelling_a_succeeded_execution_is_a_failed_precondition(
    builder: BuilderHandle, new_app: NewApp
) -> None:
    app = await new_app()
    events = await collect(builder.stub.Build(build(app.id, "a counter")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await builder.stub.CancelExecution(
            builder_pb2.CancelExecutionRequest(execution_id=events[0].started.execution_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
