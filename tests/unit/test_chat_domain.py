"""Chat domain merge rules: tool calls, texts, statuses, metadata and whole flows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from appforge.services.chat.domain import (
    TOOL_RANK,
    FlowChanges,
    FlowItem,
    ItemKind,
    MessageStatus,
    ToolCall,
    ToolStatus,
    apply_changes,
    assemble_content,
    assemble_flow,
    merge_flow,
    merge_metadata,
    merge_status,
    merge_text,
    merge_tool_call,
)
from appforge.services.common.errors import InvalidArgument

S = ToolStatus
T0 = 1_700_000_000_000_000


def text(seq: int, body: str, stamp: int | None = None) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.MESSAGE, text=body, timestamp_us=stamp)


def tools(seq: int, *calls: ToolCall, stamp: int | None = None) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.TOOLS, calls=calls, timestamp_us=stamp)


def call(call_id: str = "c1", status: ToolStatus = S.PENDING, **fields: Any) -> ToolCall:
    return ToolCall(call_id=call_id, status=status, **fields)


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


# --- merge_text, merge_status, merge_metadata -----------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param("", "Hello", "Hello", id="first-text"),
        pytest.param("Hel", "Hello", "Hello", id="grows"),
        pytest.param("Hello", "Hel", "Hello", id="shorter-late-copy-ignored"),
        pytest.param("Hello", "", "Hello", id="empty-ignored"),
        pytest.param("Hello", "Hello", "Hello", id="replay"),
    ],
)
def test_merge_text_only_grows(old: str, new: str, expected: str) -> None:
    assert merge_text(old, new) == expected


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


# --- merge_flow ----------------------------------------------------------------------------

NO_ITEMS: Mapping[int, FlowItem] = {}
NO_CALLS: Mapping[str, ToolCall] = {}
NO_POSITIONS: Mapping[int, int] = {}


def test_merge_flow_new_text_item() -> None:
    item = text(1, "Hello", T0)
    assert merge_flow(NO_ITEMS, NO_CALLS, NO_POSITIONS, [item]) == FlowChanges(new_items=(item,))


def test_merge_flow_new_tools_item_gives_calls_positions_in_batch_order() -> None:
    c1, c2 = call("c1", name="a"), call("c2", name="b")
    changes = merge_flow(NO_ITEMS, NO_CALLS, NO_POSITIONS, [tools(2, c1, c2, stamp=T0)])
    assert changes == FlowChanges(
        new_items=(tools(2, stamp=T0),),
        new_calls=((2, 0, c1), (2, 1, c2)),
    )


def test_merge_flow_new_call_in_a_stored_batch_goes_after_the_stored_calls() -> None:
    stored = {2: tools(2, stamp=T0)}
    c1, c2, c3 = call("c1"), call("c2"), call("c3")
    changes = merge_flow(stored, {"c1": c1, "c2": c2}, {2: 2}, [tools(2, c1, c2, c3)])
    assert changes == FlowChanges(new_calls=((2, 2, c3),))


def test_merge_flow_grown_text_keeps_the_stored_stamp() -> None:
    stored = {1: text(1, "Hel", T0)}
    changes = merge_flow(stored, NO_CALLS, NO_POSITIONS, [text(1, "Hello", T0 + 99)])
    assert changes == FlowChanges(grown_texts=(text(1, "Hello", T0),))


def test_merge_flow_shorter_text_changes_nothing() -> None:
    stored = {1: text(1, "Hello", T0)}
    assert merge_flow(stored, NO_CALLS, NO_POSITIONS, [text(1, "Hel", T0)]).empty


def test_merge_flow_updated_call() -> None:
    stored = {2: tools(2, stamp=T0)}
    old = call("c1", S.STREAMING, name="w")
    new = call("c1", S.SUCCEEDED, result_json="{}")
    changes = merge_flow(stored, {"c1": old}, {2: 1}, [tools(2, new)])
    assert changes == FlowChanges(
        updated_calls=(call("c1", S.SUCCEEDED, name="w", result_json="{}"),)
    )


def test_merge_flow_late_streaming_after_succeeded_changes_nothing() -> None:
    stored = {2: tools(2, stamp=T0)}
    done = call("c1", S.SUCCEEDED, result_json="{}")
    changes = merge_flow(stored, {"c1": done}, {2: 1}, [tools(2, call("c1", S.STREAMING))])
    assert changes == FlowChanges()
    assert changes.empty


def test_merge_flow_replay_is_empty() -> None:
    c1 = call("c1", S.SUCCEEDED, name="w", result_json="{}")
    request = [text(1, "Hello", T0), tools(2, c1, stamp=T0 + 1)]
    stored = {1: text(1, "Hello", T0), 2: tools(2, stamp=T0 + 1)}
    changes = merge_flow(stored, {"c1": c1}, {2: 1}, request)
    assert changes == FlowChanges()
    assert changes.empty


def test_flow_changes_empty_only_when_nothing_changes() -> None:
    assert FlowChanges().empty
    assert not FlowChanges(new_items=(text(1, "a"),)).empty
    assert not FlowChanges(grown_texts=(text(1, "a"),)).empty
    assert not FlowChanges(new_calls=((1, 0, call()),)).empty
    assert not FlowChanges(updated_calls=(call(),)).empty


@pytest.mark.parametrize(
    ("stored", "incoming", "field"),
    [
        pytest.param({1: text(1, "Hi")}, [tools(1, call())], "items[0]", id="tools-over-text"),
        pytest.param({1: tools(1)}, [text(1, "Hi")], "items[0]", id="text-over-tools"),
        pytest.param(
            {}, [text(1, "Hi"), text(2, "x"), tools(1, call())], "items[2]", id="within-request"
        ),
        pytest.param(
            {1: tools(1)}, [tools(1), text(2, "x"), text(1, "Hi")], "items[2]", id="third-item"
        ),
    ],
)
def test_merge_flow_kind_conflict_names_the_item(
    stored: Mapping[int, FlowItem], incoming: list[FlowItem], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        merge_flow(stored, NO_CALLS, NO_POSITIONS, incoming)
    assert raised.value.field == field
    assert type(raised.value) is InvalidArgument


def test_merge_flow_new_call_twice_in_one_request_is_merged_at_its_first_position() -> None:
    first = call("c1", S.PENDING, name="w", arguments_json="{}")
    second = call("c1", S.SUCCEEDED, result_json='{"ok":true}')
    other = call("c2", S.PENDING)
    changes = merge_flow(
        NO_ITEMS, NO_CALLS, NO_POSITIONS, [tools(2, first, other), tools(2, second)]
    )
    merged = call("c1", S.SUCCEEDED, name="w", arguments_json="{}", result_json='{"ok":true}')
    assert changes == FlowChanges(new_items=(tools(2),), new_calls=((2, 0, merged), (2, 1, other)))


def test_merge_flow_stored_call_twice_in_one_request_accumulates_into_one_update() -> None:
    stored_call = call("c1", S.PENDING, name="w")
    changes = merge_flow(
        {2: tools(2)},
        {"c1": stored_call},
        {2: 1},
        [
            tools(2, call("c1", S.STREAMING, arguments_json="{}")),
            tools(2, call("c1", S.SUCCEEDED, result_json="1")),
            tools(2, call("c1", S.STREAMING)),
        ],
    )
    assert changes == FlowChanges(
        updated_calls=(call("c1", S.SUCCEEDED, name="w", arguments_json="{}", result_json="1"),)
    )


def test_merge_flow_text_new_and_grown_in_one_request() -> None:
    changes = merge_flow(NO_ITEMS, NO_CALLS, NO_POSITIONS, [text(1, "He", T0), text(1, "Hello")])
    assert changes == FlowChanges(
        new_items=(text(1, "He", T0),), grown_texts=(text(1, "Hello", T0),)
    )
    items, _ = apply_changes({}, {}, changes)
    assert items == {1: text(1, "Hello", T0)}


def test_merge_flow_does_not_mutate_its_inputs() -> None:
    items = {2: tools(2)}
    calls = {"c1": call("c1")}
    positions = {2: 1}
    merge_flow(items, calls, positions, [tools(2, call("c1", S.SUCCEEDED), call("c2"))])
    assert (items, calls, positions) == ({2: tools(2)}, {"c1": call("c1")}, {2: 1})


# --- apply_changes, assemble_flow, assemble_content ----------------------------------------


def test_apply_changes_adds_items_and_calls_and_keeps_call_positions() -> None:
    items = {1: text(1, "He", T0), 2: tools(2, stamp=T0 + 1)}
    calls = {"c1": (2, 0, call("c1", S.STREAMING))}
    changes = FlowChanges(
        new_items=(tools(3, stamp=T0 + 2),),
        grown_texts=(text(1, "Hello", T0),),
        new_calls=((2, 1, call("c2")), (3, 0, call("c3"))),
        updated_calls=(call("c1", S.SUCCEEDED),),
    )
    items_after, calls_after = apply_changes(items, calls, changes)
    assert items_after == {
        1: text(1, "Hello", T0),
        2: tools(2, stamp=T0 + 1),
        3: tools(3, stamp=T0 + 2),
    }
    assert calls_after == {
        "c1": (2, 0, call("c1", S.SUCCEEDED)),
        "c2": (2, 1, call("c2")),
        "c3": (3, 0, call("c3")),
    }
    # The inputs are left as they were.
    assert items == {1: text(1, "He", T0), 2: tools(2, stamp=T0 + 1)}
    assert calls == {"c1": (2, 0, call("c1", S.STREAMING))}


def test_apply_changes_of_nothing_is_the_same_flow() -> None:
    items = {1: text(1, "Hello")}
    calls = {"c1": (2, 0, call("c1"))}
    assert apply_changes(items, calls, FlowChanges()) == (items, calls)


def test_assemble_flow_orders_items_by_seq_and_calls_by_position() -> None:
    items = {3: text(3, "done"), 1: text(1, "start"), 2: tools(2), 4: tools(4)}
    calls = {
        "b": (2, 1, call("b")),
        "z": (4, 0, call("z")),
        "c": (2, 2, call("c")),
        "a": (2, 0, call("a")),
    }
    assert assemble_flow(items, calls) == (
        text(1, "start"),
        tools(2, call("a"), call("b"), call("c")),
        text(3, "done"),
        tools(4, call("z")),
    )


def test_assemble_flow_of_a_tools_item_without_calls() -> None:
    assert assemble_flow({5: tools(5)}, {}) == (tools(5),)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        pytest.param([], "", id="no-items"),
        pytest.param([text(1, "Hello")], "Hello", id="one-text"),
        pytest.param(
            [text(3, "third"), text(1, "first"), text(2, "second")],
            "first\n\nsecond\n\nthird",
            id="seq-order",
        ),
        pytest.param(
            [text(1, "Planning"), tools(2, call()), text(3, "Done")],
            "Planning\n\nDone",
            id="tools-skipped",
        ),
        pytest.param([text(1, ""), text(2, "only"), text(3, "")], "only", id="empty-texts-skipped"),
        pytest.param([tools(1, call())], "", id="only-tools"),
    ],
)
def test_assemble_content(items: list[FlowItem], expected: str) -> None:
    assert assemble_content(items) == expected
