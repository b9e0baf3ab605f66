"""Chat domain rules for whole flows: merging a request's items into the stored flow, applying
the changes, and assembling the flow and the message content from them."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from appforge.services.chat.domain import (
    FlowChanges,
    FlowItem,
    ToolCall,
    apply_changes,
    assemble_content,
    assemble_flow,
    flow_delta,
    merge_flow,
)
from appforge.services.common.errors import FailedPrecondition, InvalidArgument
from tests.unit.chat_values import T0, S, call, piece, text, tools

# --- merge_flow ----------------------------------------------------------------------------

NO_ITEMS: Mapping[int, FlowItem] = {}


NO_CALLS: Mapping[str, tuple[int, int, ToolCall]] = {}


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
    changes = merge_flow(
        stored, {"c1": (2, 0, c1), "c2": (2, 1, c2)}, {2: 2}, [tools(2, c1, c2, c3)]
    )
    assert changes == FlowChanges(new_calls=((2, 2, c3),))


def test_merge_flow_grown_text_is_the_appended_piece_at_its_offset() -> None:
    stored = {1: text(1, "Hel", T0)}
    changes = merge_flow(stored, NO_CALLS, NO_POSITIONS, [text(1, "Hello", T0 + 99)])
    assert changes == FlowChanges(appended=(piece(1, "lo", 3),))


def test_merge_flow_appends_at_an_offset() -> None:
    stored = {1: text(1, "Hel", T0)}
    changes = merge_flow(stored, NO_CALLS, NO_POSITIONS, [piece(1, "lo", 3), piece(1, "!", 5)])
    assert changes == FlowChanges(appended=(piece(1, "lo!", 3),))
    items, _ = apply_changes(stored, {}, changes)
    assert items == {1: text(1, "Hello!", T0)}


def test_merge_flow_append_past_the_end_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as raised:
        merge_flow({1: text(1, "Hel")}, NO_CALLS, NO_POSITIONS, [text(2, "x"), piece(1, "o", 4)])
    assert raised.value.field == "items[1].message.offset"


def test_merge_flow_a_new_item_grown_in_the_same_request_is_one_new_item() -> None:
    changes = merge_flow(NO_ITEMS, NO_CALLS, NO_POSITIONS, [text(1, "He", T0), piece(1, "llo", 2)])
    assert changes == FlowChanges(new_items=(text(1, "Hello", T0),))


def test_merge_flow_shorter_text_changes_nothing() -> None:
    stored = {1: text(1, "Hello", T0)}
    assert merge_flow(stored, NO_CALLS, NO_POSITIONS, [text(1, "Hel", T0)]).empty


def test_merge_flow_updated_call() -> None:
    stored = {2: tools(2, stamp=T0)}
    old = call("c1", S.STREAMING, name="w")
    new = call("c1", S.SUCCEEDED, result_json="{}")
    changes = merge_flow(stored, {"c1": (2, 0, old)}, {2: 1}, [tools(2, new)])
    assert changes == FlowChanges(
        updated_calls=((2, call("c1", S.SUCCEEDED, name="w", result_json="{}")),)
    )


def test_merge_flow_late_streaming_after_succeeded_changes_nothing() -> None:
    stored = {2: tools(2, stamp=T0)}
    done = call("c1", S.SUCCEEDED, result_json="{}")
    changes = merge_flow(stored, {"c1": (2, 0, done)}, {2: 1}, [tools(2, call("c1", S.STREAMING))])
    assert changes == FlowChanges()
    assert changes.empty


def test_merge_flow_replay_is_empty() -> None:
    c1 = call("c1", S.SUCCEEDED, name="w", result_json="{}")
    request = [text(1, "Hello", T0), tools(2, c1, stamp=T0 + 1)]
    stored = {1: text(1, "Hello", T0), 2: tools(2, stamp=T0 + 1)}
    changes = merge_flow(stored, {"c1": (2, 0, c1)}, {2: 1}, request)
    assert changes == FlowChanges()
    assert changes.empty


def test_flow_changes_empty_only_when_nothing_changes() -> None:
    assert FlowChanges().empty
    assert not FlowChanges(new_items=(text(1, "a"),)).empty
    assert not FlowChanges(appended=(piece(1, "a", 1),)).empty
    assert not FlowChanges(new_calls=((1, 0, call()),)).empty
    assert not FlowChanges(updated_calls=((1, call()),)).empty


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
        {"c1": (2, 0, stored_call)},
        {2: 1},
        [
            tools(2, call("c1", S.STREAMING, arguments_json="{}")),
            tools(2, call("c1", S.SUCCEEDED, result_json="1")),
            tools(2, call("c1", S.STREAMING)),
        ],
    )
    merged = call("c1", S.SUCCEEDED, name="w", arguments_json="{}", result_json="1")
    assert changes == FlowChanges(updated_calls=((2, merged),))


def test_merge_flow_text_new_and_grown_in_one_request() -> None:
    changes = merge_flow(NO_ITEMS, NO_CALLS, NO_POSITIONS, [text(1, "He", T0), text(1, "Hello")])
    assert changes == FlowChanges(new_items=(text(1, "Hello", T0),))
    items, _ = apply_changes({}, {}, changes)
    assert items == {1: text(1, "Hello", T0)}


def test_merge_flow_does_not_mutate_its_inputs() -> None:
    items = {2: tools(2)}
    calls = {"c1": (2, 0, call("c1"))}
    positions = {2: 1}
    merge_flow(items, calls, positions, [tools(2, call("c1", S.SUCCEEDED), call("c2"))])
    assert (items, calls, positions) == ({2: tools(2)}, {"c1": (2, 0, call("c1"))}, {2: 1})


# --- apply_changes, assemble_flow, assemble_content ----------------------------------------


def test_apply_changes_adds_items_and_calls_and_keeps_call_positions() -> None:
    items = {1: text(1, "He", T0), 2: tools(2, stamp=T0 + 1)}
    calls = {"c1": (2, 0, call("c1", S.STREAMING))}
    changes = FlowChanges(
        new_items=(tools(3, stamp=T0 + 2),),
        appended=(piece(1, "llo", 2),),
        new_calls=((2, 1, call("c2")), (3, 0, call("c3"))),
        updated_calls=((2, call("c1", S.SUCCEEDED)),),
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


# --- flow_delta ----------------------------------------------------------------------------


def test_flow_delta_lists_what_changed_in_seq_order() -> None:
    changes = FlowChanges(
        new_items=(tools(4, stamp=T0 + 4), text(3, "new", T0 + 3)),
        appended=(piece(1, "llo", 2),),
        new_calls=((4, 1, call("d")), (2, 3, call("c")), (4, 0, call("e")), (2, 2, call("b"))),
        updated_calls=((2, call("a", S.SUCCEEDED)),),
    )
    assert flow_delta(changes) == (
        piece(1, "llo", 2),
        tools(2, call("a", S.SUCCEEDED), call("b"), call("c")),  # changed first, new in order
        text(3, "new", T0 + 3),
        tools(4, call("e"), call("d"), stamp=T0 + 4),
    )


def test_flow_delta_of_nothing_is_empty() -> None:
    assert flow_delta(FlowChanges()) == ()
