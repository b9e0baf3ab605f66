"""Chat domain merge rules for single values: a tool call's status and fields, a text, a
message status and metadata."""

from __future__ import annotations

from typing import Any

import pytest

from appforge.services.chat.domain import (
    TOOL_RANK,
    MessageStatus,
    ToolCall,
    ToolStatus,
    merge_metadata,
    merge_status,
    merge_tool_call,
    text_growth,
)
from appforge.services.common.errors import FailedPrecondition
from tests.unit.chat_values import T0, S, call

# --- merge_tool_call -----------------------------------------------------------------------

TERMINAL = (S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED)


@pytest.mark.parametrize(
    ("status", "terminal"),
    [(S.PENDING, False), (S.STREAMING, False), *((t, True) for t in TERMINAL)],
    ids=lambda v: v.name.lower() if isinstance(v, ToolStatus) else str(v),
)
def test_terminal_states(status: ToolStatus, terminal: bool) -> None:
    assert status.terminal is terminal


def _stage(status: ToolStatus) -> int:
    """pending → streaming → terminal, written out independently of TOOL_RANK."""
    return {S.PENDING: 0, S.STREAMING: 1}.get(status, 2)


def test_tool_rank_puts_every_terminal_state_after_streaming() -> None:
    assert {s: _stage(s) for s in ToolStatus} == TOOL_RANK


@pytest.mark.parametrize("new", list(ToolStatus), ids=lambda s: f"new-{s.name.lower()}")
@pytest.mark.parametrize("old", list(ToolStatus), ids=lambda s: f"old-{s.name.lower()}")
def test_status_only_moves_forward_and_the_first_terminal_state_wins(
    old: ToolStatus, new: ToolStatus
) -> None:
    merged = merge_tool_call(call(status=old), call(status=new))
    if old.terminal or _stage(new) <= _stage(old):
        assert merged.status is old
    else:
        assert merged.status is new


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            call(status=S.PENDING, name="write_file", arguments_json='{"p":"a"}'),
            call(status=S.STREAMING),
            call(status=S.STREAMING, name="write_file", arguments_json='{"p":"a"}'),
            id="pending-to-streaming-keeps-old-fields",
        ),
        pytest.param(
            call(status=S.STREAMING, name="write_file", arguments_json='{"p"'),
            call(status=S.SUCCEEDED, arguments_json='{"p":"a"}', result_json='{"ok":true}'),
            call(
                status=S.SUCCEEDED,
                name="write_file",
                arguments_json='{"p":"a"}',
                result_json='{"ok":true}',
            ),
            id="higher-rank-brings-its-non-empty-fields",
        ),
        pytest.param(
            call(status=S.PENDING, deadline_us=T0),
            call(status=S.STREAMING, deadline_us=T0 + 60_000_000),
            call(status=S.STREAMING, deadline_us=T0 + 60_000_000),
            id="higher-rank-replaces-deadline",
        ),
        pytest.param(
            call(status=S.PENDING, deadline_us=T0),
            call(status=S.STREAMING),
            call(status=S.STREAMING, deadline_us=T0),
            id="higher-rank-without-deadline-keeps-old-deadline",
        ),
        pytest.param(
            call(status=S.SUCCEEDED, name="write_file", result_json='{"ok":true}'),
            call(status=S.STREAMING, name="other", arguments_json="{}"),
            call(
                status=S.SUCCEEDED,
                name="write_file",
                arguments_json="{}",
                result_json='{"ok":true}',
            ),
            id="late-streaming-after-succeeded-keeps-status-fills-only-empty-fields",
        ),
        pytest.param(
            call(status=S.SUCCEEDED, result_json='{"ok":true}'),
            call(status=S.FAILED, error="boom"),
            call(status=S.SUCCEEDED, result_json='{"ok":true}'),
            id="failed-after-succeeded-is-ignored",
        ),
        pytest.param(
            call(status=S.TIMED_OUT, error="deadline passed"),
            call(status=S.SUCCEEDED, result_json='{"ok":true}'),
            call(status=S.TIMED_OUT, error="deadline passed"),
            id="succeeded-after-timed-out-is-ignored",
        ),
        pytest.param(
            call(status=S.SUCCEEDED),
            call(status=S.SUCCEEDED, result_json='{"late":true}'),
            call(status=S.SUCCEEDED, result_json='{"late":true}'),
            id="same-terminal-fills-empty-fields",
        ),
        pytest.param(
            call(status=S.PENDING, name="write_file"),
            call(status=S.PENDING, name="other", arguments_json="{}", deadline_us=T0),
            call(status=S.PENDING, name="write_file", arguments_json="{}", deadline_us=T0),
            id="equal-non-terminal-only-fills-empty-fields",
        ),
        pytest.param(
            call(status=S.STREAMING, arguments_json="{}", deadline_us=T0),
            call(status=S.STREAMING, arguments_json='{"a":1}', deadline_us=T0 + 1),
            call(status=S.STREAMING, arguments_json="{}", deadline_us=T0),
            id="equal-non-terminal-keeps-filled-fields",
        ),
    ],
)
def test_merge_tool_call(old: ToolCall, new: ToolCall, expected: ToolCall) -> None:
    assert merge_tool_call(old, new) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(
            call(status=S.STREAMING, name="w", arguments_json="{}"),
            call(status=S.STREAMING, name="w", arguments_json="{}"),
            id="exact-replay",
        ),
        pytest.param(
            call(status=S.PENDING, name="w", arguments_json="{}", deadline_us=T0),
            call(status=S.PENDING),
            id="equal-status-nothing-to-fill",
        ),
        pytest.param(
            call(status=S.PENDING, name="w"),
            call(status=S.PENDING, name="other"),
            id="equal-status-filled-field",
        ),
        pytest.param(call(status=S.SUCCEEDED), call(status=S.PENDING), id="lower-rank"),
        pytest.param(call(status=S.FAILED), call(status=S.CANCELLED), id="second-terminal"),
    ],
)
def test_merge_tool_call_returns_old_itself_when_nothing_changes(
    old: ToolCall, new: ToolCall
) -> None:
    assert merge_tool_call(old, new) is old


def test_merge_tool_call_returns_a_new_call_when_something_changes() -> None:
    old = call(status=S.PENDING, name="w")
    merged = merge_tool_call(old, call(status=S.PENDING, arguments_json="{}"))
    assert merged is not old
    assert merged == call(status=S.PENDING, name="w", arguments_json="{}")
    assert old == call(status=S.PENDING, name="w")


def test_merge_tool_call_keeps_the_old_call_id() -> None:
    merged = merge_tool_call(call("c1", S.PENDING), call("c1", S.STREAMING, name="w"))
    assert merged.call_id == "c1"
    assert merged.name == "w"


# --- text_growth, merge_status, merge_metadata ---------------------------------------------


@pytest.mark.parametrize(
    ("stored", "offset", "piece", "growth"),
    [
        pytest.param("", 0, "Hello", "Hello", id="first-text"),
        pytest.param("Hel", 0, "Hello", "lo", id="a-longer-copy-grows"),
        pytest.param("Hel", 3, "lo", "lo", id="an-append-at-the-end"),
        pytest.param("Hel", 2, "lo!", "o!", id="an-append-overlapping-the-end"),
        pytest.param("Hello", 0, "Hel", "", id="shorter-late-copy-is-a-replay"),
        pytest.param("Hello", 3, "lo", "", id="replayed-append"),
        pytest.param("Hello", 5, "", "", id="empty-piece-at-the-end"),
        pytest.param("Hello", 0, "", "", id="empty-piece"),
        pytest.param("héllo", 2, "llo wörld", " wörld", id="offsets-count-characters"),
    ],
)
def test_text_growth_only_appends(stored: str, offset: int, piece: str, growth: str) -> None:
    assert text_growth(stored, offset, piece, where="items[0]") == growth


@pytest.mark.parametrize(
    ("stored", "offset", "piece", "field"),
    [
        pytest.param("", 1, "x", "items[0].message.offset", id="a-new-item-starts-at-0"),
        pytest.param("Hel", 4, "o", "items[0].message.offset", id="past-the-end"),
        pytest.param("Hello", 0, "Help", "items[0].message.text", id="rewrites-the-text"),
        pytest.param("Hello", 4, "p!", "items[0].message.text", id="overlap-disagrees"),
        pytest.param("Hello", 0, "Jello world", "items[0].message.text", id="longer-but-other"),
    ],
)
def test_text_growth_refuses_what_does_not_continue_the_text(
    stored: str, offset: int, piece: str, field: str
) -> None:
    with pytest.raises(FailedPrecondition) as raised:
        text_growth(stored, offset, piece, where="items[0]")
    assert raised.value.field == field


M = MessageStatus


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(M.PENDING, M.PROCESSING, M.PROCESSING, id="pending-to-processing"),
        pytest.param(M.PROCESSING, M.COMPLETED, M.COMPLETED, id="processing-to-completed"),
        pytest.param(M.PENDING, M.COMPLETED, M.COMPLETED, id="skip-ahead"),
        pytest.param(M.COMPLETED, M.PROCESSING, M.COMPLETED, id="late-processing-ignored"),
        pytest.param(M.COMPLETED, M.PENDING, M.COMPLETED, id="late-pending-ignored"),
        pytest.param(M.COMPLETED, M.FAILED, M.FAILED, id="failed-beats-completed"),
        pytest.param(M.FAILED, M.COMPLETED, M.FAILED, id="completed-after-failed-ignored"),
        pytest.param(M.PROCESSING, M.PROCESSING, M.PROCESSING, id="replay"),
        pytest.param(M.PROCESSING, None, M.PROCESSING, id="none-leaves-it"),
        pytest.param(M.FAILED, None, M.FAILED, id="none-leaves-failed"),
    ],
)
def test_merge_status_only_moves_forward(
    old: MessageStatus, new: MessageStatus | None, expected: MessageStatus
) -> None:
    assert merge_status(old, new) is expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({}, {"a": 1}, {"a": 1}, id="into-empty"),
        pytest.param({"a": 1}, {}, {"a": 1}, id="nothing-new"),
        pytest.param({"a": 1, "b": 2}, {"b": 3}, {"a": 1, "b": 3}, id="replace-one-key"),
        pytest.param({"a": 1}, {"b": 2}, {"a": 1, "b": 2}, id="add-a-key"),
        pytest.param(
            {"error": None, "deployment_status": "deploying"},
            {"deployment_status": "deployed", "url": "http://x"},
            {"error": None, "deployment_status": "deployed", "url": "http://x"},
            id="deployment-outcome",
        ),
        pytest.param(
            {"nested": {"x": 1}}, {"nested": {"y": 2}}, {"nested": {"y": 2}}, id="top-level-only"
        ),
    ],
)
def test_merge_metadata_key_by_key(
    old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]
) -> None:
    before_old, before_new = dict(old), dict(new)
    assert merge_metadata(old, new) == expected
    assert (old, new) == (before_old, before_new)
