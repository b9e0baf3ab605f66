"""What `appforge inspect` flags, on messages built by hand."""

from __future__ import annotations

import io

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.cli.channels import console_for
from appforge.cli.inspect import analyse, execution_of, iso_us, render

NOW = 1_800_000_000_000_000


def ts(us: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMicroseconds(us)
    return out


def text(seq: int, at: int) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, timestamp=ts(at), message=flow_pb2.TextPart(text="t"))


def tools(seq: int, at: int, *calls: flow_pb2.ToolCall) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, timestamp=ts(at), tools=flow_pb2.ToolBatch(calls=calls))


def assistant(
    message_id: str,
    execution_id: str,
    *flow: flow_pb2.FlowItem,
    metadata: dict[str, str] | None = None,
) -> chat_pb2.ChatMessage:
    values = struct_pb2.Struct()
    values.update(metadata or {})
    return chat_pb2.ChatMessage(
        id=message_id,
        role=chat_pb2.ROLE_ASSISTANT,
        execution_id=execution_id,
        flow=flow,
        metadata=values,
    )


def test_a_clean_execution_has_no_problems() -> None:
    done = flow_pb2.ToolCall(call_id="c", status=flow_pb2.TOOL_STATUS_SUCCEEDED, deadline=ts(1))
    message = assistant("m1", "e1", text(1, NOW), tools(2, NOW + 1, done), text(3, NOW + 2))
    assert analyse([message], NOW + 10**9) == []


def test_the_seeds_three_symptoms_are_flagged() -> None:
    stuck = flow_pb2.ToolCall(
        call_id="c1", name="write_file", status=flow_pb2.TOOL_STATUS_STREAMING, deadline=ts(NOW)
    )
    first = assistant("m1", "e1", tools(1, NOW, stuck), text(2, NOW))  # same stamp
    legacy = assistant(
        "m2", "", text(1, NOW + 5), metadata={"execution_id": "e1"}
    )  # a second message
    problems = analyse([first, legacy], NOW + 3_000_000)
    kinds = sorted((p.kind, p.execution_id) for p in problems)
    assert kinds == [
        ("repeated_timestamp", "e1"),
        ("split_execution", "e1"),
        ("stuck_tool_call", "e1"),
    ]
    details = {p.kind: p.detail for p in problems}
    assert "seq 2 has the same timestamp as seq 1" in details["repeated_timestamp"]
    assert "c1 (write_file) still streaming 3.0 s past its deadline" in details["stuck_tool_call"]
    assert "m1, m2" in details["split_execution"]
    assert execution_of(legacy) == "e1"


def test_an_open_call_before_its_deadline_and_a_backward_stamp() -> None:
    pending = flow_pb2.ToolCall(call_id="c", status=flow_pb2.TOOL_STATUS_PENDING, deadline=ts(NOW))
    message = assistant("m", "e", tools(1, NOW, pending), text(2, NOW - 1))
    [problem] = analyse([message], NOW - 5)
    assert problem.kind == "repeated_timestamp" and "an earlier timestamp" in problem.detail


def test_timestamps_print_to_the_microsecond() -> None:
    assert iso_us(1_800_000_000_000_007) == "2027-01-15T08:00:00.000007Z"


def _printed(messages: list[chat_pb2.ChatMessage], app_id: str = "a1") -> str:
    out = io.StringIO()  # not a terminal, as when piped
    render(console_for(out), app_id, messages, analyse(messages, NOW))
    return out.getvalue()


@pytest.mark.parametrize(("count", "heading"), [(1, "1 message\n"), (2, "2 messages\n")])
def test_the_message_count_is_pluralised(count: int, heading: str) -> None:
    messages = [assistant(f"m{n}", f"e{n}", text(1, NOW)) for n in range(count)]
    assert _printed(messages).splitlines()[0] + "\n" == f"app a1  {heading}"


def test_piped_output_keeps_long_ids_and_urls_on_one_line() -> None:
    long_id = "app-" + "0123456789abcdef" * 8
    url = "http://127.0.0.1:8080/apps/" + "f" * 120 + "/"
    message = assistant("m" * 100, "e1", text(1, NOW), metadata={"url": url})
    printed = _printed([message], app_id=long_id)
    lines = printed.splitlines()
    assert any(long_id in line for line in lines)
    assert any("m" * 100 in line for line in lines)
    assert any(url in line for line in lines)
    assert max(len(line) for line in lines) < 1000  # nothing padded out to the wide console
