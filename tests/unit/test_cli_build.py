"""What `appforge build` checks before it contacts any service, how it prints on a pipe, and
how it shows text that streams in pieces."""

from __future__ import annotations

import io

import pytest

from appforge.api.flow.v1 import flow_pb2
from appforge.cli.build import validate_prompt
from appforge.cli.build_view import PipedView, Progress, grown, render
from appforge.cli.channels import console_for
from appforge.services.common.errors import InvalidArgument, LimitExceeded
from appforge.services.common.settings import Limits

LIMITS = Limits()
LIMIT = LIMITS.max_user_content_bytes


@pytest.mark.parametrize(
    "prompt", ["build a calculator", "x" * LIMIT, "é" * (LIMIT // 2)], ids=["short", "at", "utf8"]
)
def test_prompts_within_the_limits_pass(prompt: str) -> None:
    assert validate_prompt(prompt, LIMITS) == prompt


@pytest.mark.parametrize(
    ("prompt", "error", "needle"),
    [
        ("", InvalidArgument, "prompt: must not be empty"),
        (" \n\t ", InvalidArgument, "prompt: must not be empty"),
        ("x" * (LIMIT + 1), LimitExceeded, f"is {LIMIT + 1} bytes; the limit is {LIMIT} bytes"),
        ("é" * (LIMIT // 2 + 1), LimitExceeded, f"is {LIMIT + 2} bytes"),  # bytes, not chars
    ],
    ids=["empty", "blank", "one-byte-over", "utf8-over"],
)
def test_prompts_chat_would_refuse_are_refused(
    prompt: str, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        validate_prompt(prompt, LIMITS)


def test_the_limit_comes_from_the_given_limits() -> None:
    with pytest.raises(LimitExceeded):
        validate_prompt("x" * 11, Limits(max_user_content_bytes=10))


def test_a_piped_live_view_does_not_wrap() -> None:
    from appforge.api.chat.v1 import chat_pb2

    out = io.StringIO()
    console = console_for(out)
    name = "app-" + "x" * 150
    console.print(render(Progress(app=chat_pb2.App(id="a", name=name), execution_id="e" * 40)))
    [line] = out.getvalue().splitlines()
    assert name in line and "e" * 40 in line


# --- streamed text ------------------------------------------------------------------------


def _piece(seq: int, text: str, offset: int) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(
        execution_id="e", seq=seq, message=flow_pb2.TextPart(text=text, offset=offset)
    )


def _tools(seq: int, *statuses: flow_pb2.ToolStatus.ValueType) -> flow_pb2.FlowItem:
    calls = [
        flow_pb2.ToolCall(call_id=f"c{n}", name="write_file", status=status)
        for n, status in enumerate(statuses)
    ]
    return flow_pb2.FlowItem(execution_id="e", seq=seq, tools=flow_pb2.ToolBatch(calls=calls))


def _shown(progress: Progress) -> str:
    out = io.StringIO()
    console_for(out).print(render(progress))
    return out.getvalue()


def test_a_text_item_grows_by_the_pieces_at_their_offsets() -> None:
    progress = Progress()
    first = _piece(1, "I'll build", 0)
    progress.add(first)
    assert "I'll build" in _shown(progress)
    progress.add(_piece(1, " a calc", 10))
    progress.add(_piece(1, "build a", 5))  # a replay: ends within the text
    progress.add(_piece(1, "ulator.", 17))
    assert progress.items[1].message.text == "I'll build a calculator."
    assert progress.items[1].message.offset == 0
    assert "I'll build a calculator." in _shown(progress)
    assert first.message.text == "I'll build"  # the event itself is left as it came
    assert len(progress.items) == 1 and progress.summary().startswith("1 flow items")


def test_grown_handles_replays_overlaps_and_gaps() -> None:
    assert grown("abc", 0, "ab") == "abc"
    assert grown("abc", 1, "bcd") == "abcd"
    assert grown("abc", 3, "d") == "abcd"
    assert grown("abc", 5, "z") == "abcz"  # a piece missed: the rest is shown anyway
    assert grown("", 0, "") == ""


def test_a_piped_view_prints_each_item_once_whole_when_it_is_complete() -> None:
    from appforge.api.builder.v1 import builder_pb2
    from appforge.api.chat.v1 import chat_pb2

    out = io.StringIO()
    view = PipedView(console_for(out))
    progress = Progress(app=chat_pb2.App(id="a", name="calc"))
    view.update(progress)
    assert out.getvalue() == ""  # no execution yet
    progress.execution_id = "exec-1"
    steps = [
        _piece(1, "I'll build", 0),
        _piece(1, " a calculator.", 10),
        _tools(2, flow_pb2.TOOL_STATUS_PENDING, flow_pb2.TOOL_STATUS_PENDING),
        _tools(2, flow_pb2.TOOL_STATUS_SUCCEEDED, flow_pb2.TOOL_STATUS_STREAMING),
        _tools(2, flow_pb2.TOOL_STATUS_SUCCEEDED, flow_pb2.TOOL_STATUS_SUCCEEDED),
        _piece(3, "Your calculator", 0),
        _piece(3, " is ready.", 15),
    ]
    printed: list[str] = []
    for item in steps:
        progress.add(item)
        view.update(progress)
        printed.append(out.getvalue())
    assert printed[1].splitlines() == ["appforge build calc  execution exec-1"]  # text waits
    assert "1 I'll build a calculator." in printed[2]  # a later item: the text is complete
    assert "✔" not in printed[3]  # the batch is still running
    assert printed[4].count("succeeded") == 2
    assert printed[-1] == printed[4]  # the last text may still grow
    progress.finished = builder_pb2.BuildFinished(
        status=builder_pb2.EXECUTION_STATUS_SUCCEEDED, deployment_id="d1"
    )
    view.close(progress)
    lines = out.getvalue().splitlines()
    assert lines[-2:] == ["3 Your calculator is ready.", "deploy  queued"]
    whole = out.getvalue()
    assert whole.count("calculator.") == 1 and whole.count("is ready.") == 1
    assert whole.count("execution exec-1") == 1


def test_a_piped_view_prints_what_it_has_when_the_build_stops_early() -> None:
    from appforge.api.chat.v1 import chat_pb2

    out = io.StringIO()
    view = PipedView(console_for(out))
    progress = Progress(app=chat_pb2.App(id="a", name="calc"), execution_id="exec-2")
    progress.add(_piece(1, "Half a thou", 0))
    progress.add(_tools(2, flow_pb2.TOOL_STATUS_STREAMING))
    view.update(progress)
    view.close(progress)
    lines = out.getvalue().splitlines()
    assert lines[0] == "appforge build calc  execution exec-2"
    assert lines[1] == "1 Half a thou"
    assert lines[2].startswith("2 … write_file") and "running" in lines[2]
