"""Protobuf <-> chat domain: lossless round trips and structural errors with their field."""

from __future__ import annotations

import math

import pytest

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.chat.convert import (
    ProtoChangeCodec,
    change_to_proto,
    message_from_proto,
    message_to_proto,
    upsert_from_proto,
)
from appforge.services.chat.domain import (
    AssistantUpsert,
    FlowItem,
    ItemKind,
    Message,
    MessageChanged,
    MessageStatus,
    Role,
    ToolCall,
    ToolStatus,
)
from appforge.services.common.errors import InvalidArgument
from appforge.services.common.proto import timestamp

T0 = 1_700_000_000_123_456
EXEC = "0b6f3c1e-6a1d-4f5e-9a57-0c3b6b9e7f21"


def assistant_message() -> Message:
    return Message(
        id="msg-1",
        app_id="app-1",
        role=Role.ASSISTANT,
        execution_id=EXEC,
        content="Planning the calculator\n\nDeployed",
        status=MessageStatus.COMPLETED,
        metadata={
            "deployment_status": "deployed",
            "url": "http://127.0.0.1:8080/app-1/",
            "attempts": 2.0,
            "ok": True,
            "error": None,
            "files": ["index.html", "app.js"],
            "timing": {"build_s": 1.5, "deploy_s": 0.25},
        },
        version=7,
        created_us=T0,
        updated_us=T0 + 9_000_000,
        cursor=42,
        flow=(
            FlowItem(
                seq=1,
                kind=ItemKind.MESSAGE,
                timestamp_us=T0 + 1,
                text="Planning the calculator",
            ),
            FlowItem(
                seq=2,
                kind=ItemKind.TOOLS,
                timestamp_us=T0 + 2,
                calls=(
                    ToolCall(
                        call_id="call-1",
                        name="write_file",
                        status=ToolStatus.SUCCEEDED,
                        arguments_json='{"path":"index.html"}',
                        result_json='{"bytes":512}',
                        deadline_us=T0 + 60_000_000,
                    ),
                    ToolCall(
                        call_id="call-2",
                        name="write_file",
                        status=ToolStatus.TIMED_OUT,
                        arguments_json='{"path":"app.js"}',
                        error="deadline passed",
                        deadline_us=T0 + 60_000_001,
                    ),
                    ToolCall(call_id="call-3", status=ToolStatus.PENDING),
                ),
            ),
            FlowItem(seq=3, kind=ItemKind.MESSAGE, timestamp_us=None, text="Deployed"),
        ),
    )


def user_message() -> Message:
    return Message(
        id="msg-0",
        app_id="app-1",
        role=Role.USER,
        execution_id=None,
        content="Build me a calculator",
        status=MessageStatus.COMPLETED,
        metadata={},
        version=1,
        created_us=T0,
        updated_us=T0,
        cursor=1,
        request_id="req-1",
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(assistant_message(), id="assistant-with-flow"),
        pytest.param(user_message(), id="user-with-request-id"),
    ],
)
def test_message_round_trip(message: Message) -> None:
    assert message_from_proto(message_to_proto(message)) == message


def test_message_round_trip_through_the_wire() -> None:
    message = assistant_message()
    wire = message_to_proto(message).SerializeToString()
    assert message_from_proto(chat_pb2.ChatMessage.FromString(wire)) == message


def test_message_to_proto_fields() -> None:
    proto = message_to_proto(assistant_message())
    assert (proto.role, proto.status) == (
        chat_pb2.ROLE_ASSISTANT,
        chat_pb2.MESSAGE_STATUS_COMPLETED,
    )
    assert [item.execution_id for item in proto.flow] == [EXEC, EXEC, EXEC]
    assert [item.WhichOneof("body") for item in proto.flow] == ["message", "tools", "message"]
    assert [item.HasField("timestamp") for item in proto.flow] == [True, True, False]
    calls = proto.flow[1].tools.calls
    assert [c.status for c in calls] == [
        flow_pb2.TOOL_STATUS_SUCCEEDED,
        flow_pb2.TOOL_STATUS_TIMED_OUT,
        flow_pb2.TOOL_STATUS_PENDING,
    ]
    assert calls[0].deadline.ToMicroseconds() == T0 + 60_000_000
    assert not calls[2].HasField("deadline")
    assert proto.updated_at.ToMicroseconds() == T0 + 9_000_000


def test_user_message_to_proto_has_no_execution() -> None:
    proto = message_to_proto(user_message())
    assert (proto.execution_id, proto.request_id) == ("", "req-1")


def test_timestamp_keeps_microseconds() -> None:
    ts = timestamp(T0)
    assert (ts.seconds, ts.nanos) == (1_700_000_000, 123_456_000)


# --- changes on the bus --------------------------------------------------------------------

CODEC = ProtoChangeCodec()


def test_a_change_crosses_the_bus_as_the_event_watchers_are_sent() -> None:
    change = MessageChanged(cursor=42, message=assistant_message())
    payload = CODEC.encode(change)
    assert chat_pb2.MessageEvent.FromString(payload) == change_to_proto(change)
    relayed = CODEC.decode(payload)
    assert relayed is not None
    assert relayed.cursor == 42
    assert relayed.message == change.message


def test_a_payload_is_parsed_once_and_relayed_without_conversion() -> None:
    payload = CODEC.encode(MessageChanged(cursor=7, message=user_message()))
    first, again = CODEC.decode(payload), CODEC.decode(bytes(payload))
    assert first is not None and first is again  # one parse per process, shared by watchers
    event = change_to_proto(first)
    assert event is change_to_proto(again)  # the servicer relays it as parsed
    assert event.SerializeToString() == payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\xff\xff", id="not-protobuf"),
        pytest.param(b"", id="no-message"),
        pytest.param(
            chat_pb2.MessageEvent(message=chat_pb2.ChatMessage(id="m")).SerializeToString(),
            id="no-cursor",
        ),
    ],
)
def test_a_payload_that_is_not_a_change_decodes_to_none(payload: bytes) -> None:
    assert CODEC.decode(payload) is None


# --- upsert_from_proto ---------------------------------------------------------------------


def request(*items: flow_pb2.FlowItem, **fields: object) -> chat_pb2.UpsertAssistantMessageRequest:
    return chat_pb2.UpsertAssistantMessageRequest(
        app_id="app-1",
        execution_id=EXEC,
        items=items,
        **fields,  # type: ignore[arg-type]
    )


def test_upsert_from_proto() -> None:
    proto = request(
        flow_pb2.FlowItem(
            execution_id=EXEC,
            seq=1,
            timestamp=timestamp(T0),
            message=flow_pb2.TextPart(text="Planning"),
        ),
        flow_pb2.FlowItem(
            seq=2,
            tools=flow_pb2.ToolBatch(
                calls=[
                    flow_pb2.ToolCall(
                        call_id="c1",
                        name="write_file",
                        status=flow_pb2.TOOL_STATUS_STREAMING,
                        arguments_json="{}",
                        deadline=timestamp(T0 + 5),
                    ),
                    flow_pb2.ToolCall(call_id="c2"),
                ]
            ),
        ),
        status=chat_pb2.MESSAGE_STATUS_PROCESSING,
    )
    proto.metadata.update({"phase": "build", "n": 3})
    assert upsert_from_proto(proto) == AssistantUpsert(
        app_id="app-1",
        execution_id=EXEC,
        items=(
            FlowItem(seq=1, kind=ItemKind.MESSAGE, timestamp_us=T0, text="Planning"),
            FlowItem(
                seq=2,
                kind=ItemKind.TOOLS,
                calls=(
                    ToolCall(
                        call_id="c1",
                        name="write_file",
                        status=ToolStatus.STREAMING,
                        arguments_json="{}",
                        deadline_us=T0 + 5,
                    ),
                    # An unspecified tool status means the call was just announced.
                    ToolCall(call_id="c2", status=ToolStatus.PENDING),
                ),
            ),
        ),
        status=MessageStatus.PROCESSING,
        metadata={"phase": "build", "n": 3.0},
    )


def test_upsert_from_proto_unspecified_status_and_no_metadata_change_nothing() -> None:
    result = upsert_from_proto(request())
    assert (result.status, dict(result.metadata), result.items) == (None, {}, ())


@pytest.mark.parametrize(
    ("proto", "field"),
    [
        pytest.param(request(flow_pb2.FlowItem(seq=1)), "items[0]", id="item-without-body"),
        pytest.param(
            request(
                flow_pb2.FlowItem(seq=1, message=flow_pb2.TextPart(text="ok")),
                flow_pb2.FlowItem(seq=2, timestamp=timestamp(T0)),
            ),
            "items[1]",
            id="second-item-without-body",
        ),
        pytest.param(
            request(
                flow_pb2.FlowItem(
                    execution_id="another-exec", seq=1, message=flow_pb2.TextPart(text="x")
                )
            ),
            "items[0].execution_id",
            id="item-of-another-execution",
        ),
        pytest.param(
            request(
                flow_pb2.FlowItem(
                    seq=1,
                    tools=flow_pb2.ToolBatch(
                        calls=[
                            flow_pb2.ToolCall(call_id="c1"),
                            flow_pb2.ToolCall(call_id="c2", status=99),  # type: ignore[arg-type]
                        ]
                    ),
                )
            ),
            "items[0].tools.calls[1].status",
            id="unknown-tool-status",
        ),
        pytest.param(
            request(status=99),
            "status",
            id="unknown-message-status",
        ),
    ],
)
def test_upsert_from_proto_rejects(
    proto: chat_pb2.UpsertAssistantMessageRequest, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        upsert_from_proto(proto)
    assert type(raised.value) is InvalidArgument
    assert raised.value.field == field


@pytest.mark.parametrize("number", [math.nan, math.inf], ids=["nan", "inf"])
def test_upsert_from_proto_rejects_non_finite_metadata(number: float) -> None:
    proto = request()
    proto.metadata.update({"progress": number})
    with pytest.raises(InvalidArgument) as raised:
        upsert_from_proto(proto)
    assert raised.value.field == "metadata"
