"""The scripted model's plan: how it picks the app kind, its tool batches and call ids,
determinism, how a failed call ends the build, and the tool schemas it offers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from appforge.services.builder.models.base import (
    DELETE_FILE,
    LIST_FILES,
    READ_FILE,
    TOOL_NAMES,
    TOOL_SCHEMAS,
    WRITE_FILE,
    Exchange,
    Model,
    ToolRequest,
    ToolResult,
    Turn,
)
from appforge.services.builder.models.scripted import AppKind, ScriptedModel, classify
from tests.unit.scripted_model_helpers import APP_FILES, PROMPTS, MemorySandbox

MAX_TURNS = 10


async def build(
    prompt: str, sandbox: MemorySandbox | None = None, model: Model | None = None
) -> tuple[list[Exchange], MemorySandbox]:
    """Runs the model to its last turn; the history ends with that turn (without results)."""
    model = model or ScriptedModel()
    sandbox = sandbox or MemorySandbox()
    history: list[Exchange] = []
    for _ in range(MAX_TURNS):
        turn = await model.next_turn(prompt, history)
        results = tuple(sandbox.run(call) for call in turn.tool_calls)
        history.append(Exchange(turn=turn, results=results))
        if turn.done:
            return history, sandbox
    pytest.fail(f"the model did not finish within {MAX_TURNS} turns")


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("build a calculator", AppKind.CALCULATOR),
        ("A CALC please", AppKind.CALCULATOR),
        ("two calculators", AppKind.CALCULATOR),
        ("my todo list", AppKind.TODO),
        ("a To-Do app", AppKind.TODO),
        ("a task list for the team", AppKind.TODO),
        ("track my tasks", AppKind.TODO),
        ("a Counter", AppKind.COUNTER),
        ("cookie clicker", AppKind.COUNTER),
        ("take a note", AppKind.NOTES),
        ("my Notes", AppKind.NOTES),
        ("a notepad", AppKind.NOTES),
        ("a todo list with notes", AppKind.TODO),
        ("a notes page with a counter", AppKind.COUNTER),
        ("calcium intake tracker", AppKind.PLAIN),
        ("an encounter log", AppKind.PLAIN),
        ("a landing page for my bakery", AppKind.PLAIN),
        ("", AppKind.PLAIN),
    ],
)
def test_classify_picks_the_kind_by_whole_keywords(prompt: str, kind: AppKind) -> None:
    assert classify(prompt) is kind


@pytest.mark.parametrize("kind", list(AppKind))
async def test_builds_in_two_tool_batches_with_text_between(kind: AppKind) -> None:
    history, sandbox = await build(PROMPTS[kind])

    batches = [exchange.turn for exchange in history if exchange.turn.tool_calls]
    assert len(batches) >= 2
    assert all(turn.text.strip() for turn in batches), "every batch is announced by text"
    assert history[-1].turn.done and history[-1].turn.text.strip()
    assert sandbox.files.keys() == APP_FILES
    assert all(call.name in TOOL_NAMES for turn in batches for call in turn.tool_calls)
    assert "ready" in history[-1].turn.text


@pytest.mark.parametrize("kind", list(AppKind))
async def test_same_prompt_gives_the_same_turns(kind: AppKind) -> None:
    first, first_files = await build(PROMPTS[kind])
    second, second_files = await build(PROMPTS[kind])

    assert [e.turn for e in first] == [e.turn for e in second]
    assert first_files.files == second_files.files


async def test_call_ids_are_stable_unique_and_depend_on_the_prompt() -> None:
    history, _ = await build("build a calculator")
    ids = [call.call_id for e in history for call in e.turn.tool_calls]
    other, _ = await build("build a calculator!")
    other_ids = [call.call_id for e in other for call in e.turn.tool_calls]

    assert all(re.fullmatch(r"call_\d+_\d+_[0-9a-f]{8}", call_id) for call_id in ids)
    assert [call_id.rsplit("_", 1)[0] for call_id in ids] == [
        "call_0_0",
        "call_0_1",
        "call_1_0",
        "call_1_1",
    ]
    assert len(set(ids)) == len(ids)
    assert set(ids).isdisjoint(other_ids)


async def test_calculator_plan_matches_the_seed_flow() -> None:
    history, _ = await build("build a calculator")
    calls = [[(c.name, c.arguments.get("path")) for c in e.turn.tool_calls] for e in history]

    assert calls == [
        [(WRITE_FILE, "index.html"), (WRITE_FILE, "styles.css")],
        [(WRITE_FILE, "app.js"), (LIST_FILES, None)],
        [],
    ]


def test_turns_after_the_last_are_still_done() -> None:
    model = ScriptedModel()
    history = [Exchange(turn=Turn(text="earlier")) for _ in range(5)]
    assert model.turn("build a calculator", history).done


@pytest.mark.parametrize(("failing_path", "turn_count"), [("styles.css", 2), ("app.js", 3)])
async def test_a_failed_call_stops_the_build_and_is_named(
    failing_path: str, turn_count: int
) -> None:
    def fail(request: ToolRequest) -> str | None:
        return "disk full" if request.arguments.get("path") == failing_path else None

    history, sandbox = await build("build a calculator", MemorySandbox(fail=fail))

    failed = next(
        call
        for e in history
        for call in e.turn.tool_calls
        if call.arguments.get("path") == failing_path
    )
    last = history[-1].turn
    assert len(history) == turn_count
    assert last.done
    assert failed.call_id in last.text
    assert f"write_file {failing_path}" in last.text
    assert "disk full" in last.text
    assert "ready" not in last.text
    assert failing_path not in sandbox.files


async def test_a_call_without_result_counts_as_failed() -> None:
    model = ScriptedModel()
    first = await model.next_turn("a counter", [])
    results = (ToolResult(call_id=first.tool_calls[0].call_id, ok=True, output={}),)

    turn = await model.next_turn("a counter", [Exchange(turn=first, results=results)])

    assert turn.done
    assert first.tool_calls[1].call_id in turn.text
    assert "no result" in turn.text


async def test_a_listing_without_a_written_file_is_not_called_a_success() -> None:
    class ForgetfulSandbox(MemorySandbox):
        def listing(self) -> dict[str, Any]:
            return {"files": [p for p in sorted(self.files) if p != "app.js"]}

    history, _ = await build("a counter", ForgetfulSandbox())

    assert "missing app.js" in history[-1].turn.text
    assert "ready" not in history[-1].turn.text


def test_tool_schemas_are_openai_function_tools() -> None:
    names = [schema["function"]["name"] for schema in TOOL_SCHEMAS]
    assert names == [WRITE_FILE, READ_FILE, DELETE_FILE, LIST_FILES]
    for schema in TOOL_SCHEMAS:
        assert schema["type"] == "function"
        function = schema["function"]
        assert function["description"]
        parameters = function["parameters"]
        assert parameters["type"] == "object"
        assert set(parameters.get("required", [])) <= parameters["properties"].keys()
    write = TOOL_SCHEMAS[0]["function"]["parameters"]
    assert write["required"] == ["path", "content"]
    assert json.loads(json.dumps(TOOL_SCHEMAS)) == list(TOOL_SCHEMAS)
