"""The scripted model: its plan in tool batches, determinism, failure handling, and the apps
it writes (well-formed HTML, safe JS, and working logic, checked under Node)."""

from __future__ import annotations

import fnmatch
import html
import json
import re
import string
import tomllib
from collections.abc import Callable
from pathlib import Path
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
from tests.app_checks import parse_html, run_node

MAX_TURNS = 10
APP_FILES = {"index.html", "styles.css", "app.js"}
XSS_PROMPT = '<script>alert(1)</script> & "friends"'
REPO = Path(__file__).resolve().parents[2]
BUILDER_PYPROJECT = REPO / "services" / "builder" / "pyproject.toml"
# The source tree's copy, read with pathlib: the model loads its own through importlib.resources.
TEMPLATES = BUILDER_PYPROJECT.parent / "src/appforge/services/builder/models/templates"

PROMPTS = {
    AppKind.CALCULATOR: "build a calculator",
    AppKind.TODO: "Make me a TODO app",
    AppKind.COUNTER: "a clicker for my workouts",
    AppKind.NOTES: "I need a notepad",
    AppKind.PLAIN: XSS_PROMPT,
}


# --- a tiny in-memory sandbox and a driver -----------------------------------------------


class MemorySandbox:
    """Applies tool calls to a dict, the way the builder's sandbox would."""

    def __init__(self, *, fail: Callable[[ToolRequest], str | None] = lambda _: None) -> None:
        self.files: dict[str, str] = {}
        self._fail = fail

    def run(self, request: ToolRequest) -> ToolResult:
        error = self._fail(request)
        if error is not None:
            return ToolResult(call_id=request.call_id, ok=False, error=error)
        args = request.arguments
        output: dict[str, Any]
        if request.name == WRITE_FILE:
            self.files[args["path"]] = args["content"]
            output = {"path": args["path"], "bytes": len(args["content"].encode())}
        elif request.name == READ_FILE:
            output = {"path": args["path"], "content": self.files[args["path"]]}
        elif request.name == DELETE_FILE:
            del self.files[args["path"]]
            output = {"path": args["path"], "deleted": True}
        elif request.name == LIST_FILES:
            output = self.listing()
        else:
            return ToolResult(call_id=request.call_id, ok=False, error="unknown tool")
        return ToolResult(call_id=request.call_id, ok=True, output=output)

    def listing(self) -> dict[str, Any]:
        return {
            "files": [{"path": p, "bytes": len(self.files[p].encode())} for p in sorted(self.files)]
        }


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


def app_files_for(kind: AppKind) -> dict[str, str]:
    """The files the model writes for `kind`'s prompt when every call succeeds."""
    model = ScriptedModel()
    sandbox = MemorySandbox()
    history: list[Exchange] = []
    for _ in range(2):
        turn = model.turn(PROMPTS[kind], history)
        history.append(Exchange(turn=turn, results=tuple(map(sandbox.run, turn.tool_calls))))
    return sandbox.files


# --- HTML checks --------------------------------------------------------------------------

FORBIDDEN_JS = (
    re.compile(r"\beval\s*\("),
    re.compile(r"\bnew\s+Function\b"),
    re.compile(r"\bFunction\s*\("),
    re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write"),
)


# --- the model ----------------------------------------------------------------------------


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


def stored_templates() -> dict[str, dict[str, bytes]]:
    """Every template folder in the source tree, by name, with its files' bytes (each
    folder's styles.css holds what follows the shared base.css)."""
    return {
        folder.name: {file.name: file.read_bytes() for file in folder.iterdir()}
        for folder in TEMPLATES.iterdir()
        if folder.is_dir() and not folder.name.startswith("__")
    }


def test_template_folders_are_the_app_kinds_and_all_ship_as_package_data() -> None:
    pyproject = tomllib.loads(BUILDER_PYPROJECT.read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["*"]
    stored = stored_templates()

    assert stored.keys() == {kind.value for kind in AppKind}
    assert any(fnmatch.fnmatch("base.css", glob) for glob in globs)
    for folder, files in stored.items():
        assert files.keys() == APP_FILES, folder
        for name in files:
            assert any(fnmatch.fnmatch(name, glob) for glob in globs), (folder, name, globs)


@pytest.mark.parametrize("kind", list(AppKind))
def test_the_model_writes_its_template_folder_byte_for_byte(kind: AppKind) -> None:
    expected = stored_templates()[kind.value]
    expected["styles.css"] = (TEMPLATES / "base.css").read_bytes() + expected["styles.css"]
    if kind is AppKind.PLAIN:
        page = string.Template(expected["index.html"].decode("utf-8"))
        escaped = html.escape(PROMPTS[kind])
        expected["index.html"] = page.substitute(title=escaped, heading=escaped).encode("utf-8")

    written = {path: content.encode("utf-8") for path, content in app_files_for(kind).items()}

    assert written == expected


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


# --- the apps -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(AppKind))
def test_index_html_is_well_formed_and_links_its_files(kind: AppKind) -> None:
    files = app_files_for(kind)
    parser = parse_html(files["index.html"])

    assert parser.doctype
    assert parser.tags("html") == [{"lang": "en"}]
    assert "".join(parser.text_by_tag.get("title", [])).strip()
    assert {"rel": "stylesheet", "href": "styles.css"} in parser.tags("link")
    assert [attrs.get("src") for attrs in parser.tags("script")] == ["app.js"]
    assert parser.tags("h1")


@pytest.mark.parametrize("kind", list(AppKind))
def test_controls_are_labelled(kind: AppKind) -> None:
    parser = parse_html(app_files_for(kind)["index.html"])

    labelled = {attrs.get("for") for attrs in parser.tags("label")}
    for attrs in parser.tags("input") + parser.tags("textarea"):
        assert attrs.get("id") in labelled or attrs.get("aria-label"), attrs
    for attrs in parser.tags("button"):
        assert attrs.get("type") in ("button", "submit"), attrs
    assert parser.text_by_tag.get("button") or all(
        attrs.get("aria-label") for attrs in parser.tags("button")
    )


@pytest.mark.parametrize("kind", list(AppKind))
def test_apps_are_self_contained_and_never_run_input_as_code(kind: AppKind) -> None:
    files = app_files_for(kind)

    assert files.keys() == APP_FILES
    for name, content in files.items():
        assert "http://" not in content and "https://" not in content and "//cdn" not in content
        assert "@import" not in content, name
    for pattern in FORBIDDEN_JS:
        assert not pattern.search(files["app.js"]), pattern.pattern
    assert 'if (typeof module !== "undefined")' in files["app.js"]
    assert 'if (typeof document !== "undefined")' in files["app.js"]


def test_plain_page_escapes_the_prompt() -> None:
    files = app_files_for(AppKind.PLAIN)
    parser = parse_html(files["index.html"])

    assert "<script>alert" not in files["index.html"]
    assert html.escape(XSS_PROMPT) in files["index.html"]
    assert "".join(parser.text_by_tag["h1"]) == XSS_PROMPT
    assert "".join(parser.text_by_tag["title"]) == XSS_PROMPT
    assert [attrs.get("src") for attrs in parser.tags("script")] == ["app.js"]
    assert "alert" not in files["app.js"] and "alert" not in files["styles.css"]


def test_plain_page_shortens_a_long_title_but_keeps_the_whole_heading() -> None:
    prompt = "a page about " + "very " * 40 + "long <things>"
    turn = ScriptedModel().turn(prompt, [])
    parser = parse_html(turn.tool_calls[0].arguments["content"])

    title = "".join(parser.text_by_tag["title"])
    assert len(title) <= 60 and title.endswith("...")
    assert "".join(parser.text_by_tag["h1"]) == " ".join(prompt.split())


# --- the apps' logic, under Node ------------------------------------------------------------


def write_app_js(tmp_path: Path, kind: AppKind) -> str:
    path = tmp_path / f"{kind.value}.js"
    path.write_text(app_files_for(kind)["app.js"], encoding="utf-8")
    return str(path)


CALCULATOR_CASES = [
    ("1+2*3", "7"),
    ("(1+2)*3", "9"),
    ("10/4", "2.5"),
    ("-3+5", "2"),
    ("2*-3", "-6"),
    ("0.1+0.2", "0.3"),
    ("2-3-4", "-5"),
    ("100/10/5", "2"),
    (".5+1.", "1.5"),
    ("-(2+3)*2", "-10"),
    ("7\u00f72\u00d74\u22121", "13"),  # the keypad's own symbols
    ("1/3", "0.333333333333"),
    ("-0*5", "0"),
]
CALCULATOR_ERRORS = ["1/0", "5/(2-2)", "", "1+", "*2", "1..2", "(1+2", "1+2)", "2^3", "alert(1)"]


def test_calculator_evaluates_with_precedence_and_reports_errors(tmp_path: Path) -> None:
    expressions = [expression for expression, _ in CALCULATOR_CASES] + CALCULATOR_ERRORS
    script = """
const { evaluate } = require(process.argv[1]);
const expressions = JSON.parse(process.argv[2]);
console.log(JSON.stringify(expressions.map((e) => evaluate(e))));
"""
    results = run_node(script, write_app_js(tmp_path, AppKind.CALCULATOR), json.dumps(expressions))
    by_expression = dict(zip(expressions, results, strict=True))

    for expression, display in CALCULATOR_CASES:
        result = by_expression[expression]
        assert result["ok"] is True, (expression, result)
        assert result["display"] == display, expression
        assert result["value"] == pytest.approx(float(display)), expression
    for expression in CALCULATOR_ERRORS:
        result = by_expression[expression]
        assert (result["ok"], result["display"]) == (False, "Error"), (expression, result)
    assert by_expression["1/0"]["error"] == "Division by zero"


# A minimal DOM, enough for each app's start(): elements by id, created elements, listeners.
FAKE_DOM = """
class El {
  constructor(tag, id) {
    Object.assign(this, { tagName: tag, id: id, children: [], listeners: {}, dataset: {},
      attributes: {}, textContent: "", value: "", checked: false, className: "" });
  }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  fire(type, extra) {
    const event = Object.assign({ target: this, defaultPrevented: false,
      preventDefault() { this.defaultPrevented = true; } }, extra || {});
    for (const fn of this.listeners[type] || []) fn(event);
    return event;
  }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  setAttribute(name, value) { this.attributes[name] = String(value); }
  closest() { return this.tagName === "button" ? this : null; }
  focus() {}
  requestSubmit() { this.fire("submit"); }
}
const byId = {};
const buttons = [];
const store = {};
const document = new El("#document");
Object.assign(document, {
  readyState: "complete",
  body: new El("body"),
  getElementById(id) {
    return byId[id] || (byId[id] = new El(id === "theme" ? "button" : "div", id));
  },
  createElement(tag) { return new El(tag); },
  querySelectorAll() { return buttons; },
});
function button(data) { const b = new El("button"); Object.assign(b.dataset, data); return b; }
globalThis.document = document;
globalThis.localStorage = {
  getItem(key) { return key in store ? store[key] : null; },
  setItem(key, value) { store[key] = String(value); },
};
"""


def run_app_in_fake_dom(tmp_path: Path, kind: AppKind, scenario: str, setup: str = "") -> Any:
    """Loads `kind`'s app.js into FAKE_DOM after `setup`, then runs `scenario`."""
    script = FAKE_DOM + setup + "\nconst app = require(process.argv[1]);\n" + scenario
    return run_node(script, write_app_js(tmp_path, kind))


def test_calculator_keypad_and_keyboard(tmp_path: Path) -> None:
    scenario = """
const display = byId.display;
const keys = byId.keys;
const press = (input) => keys.fire("click", { target: button({ input }) });
const act = (action) => keys.fire("click", { target: button({ action }) });
const type = (key) => document.fire("keydown", { key });
const seen = [];
for (const s of ["1", "+", "2", "*", "3"]) press(s);
seen.push(display.textContent);
act("equals"); seen.push(display.textContent);
press("+"); press("1"); act("equals"); seen.push(display.textContent);
press("4"); seen.push(display.textContent);
act("clear"); seen.push(display.textContent);
for (const k of ["1", "/", "0"]) type(k);
const enter = type("Enter"); seen.push(display.textContent, enter.defaultPrevented);
type("5"); type("Backspace"); type("9"); seen.push(display.textContent);
type("Escape"); seen.push(display.textContent);
seen.push(document.fire("keydown", { key: "c", ctrlKey: true }).defaultPrevented);
console.log(JSON.stringify(seen));
"""
    assert run_app_in_fake_dom(tmp_path, AppKind.CALCULATOR, scenario) == [
        "1+2\u00d73",
        "7",
        "8",
        "4",
        "0",
        "Error",
        True,
        "9",
        "0",
        False,
    ]


def test_todo_adds_completes_deletes_and_persists(tmp_path: Path) -> None:
    scenario = """
const input = byId["new-item"];
const list = byId.items;
const seen = [];
input.value = "  <b>Buy milk</b> ";
byId["add-form"].fire("submit");
input.value = "Walk";
byId["add-form"].fire("submit");
input.value = "   ";
byId["add-form"].fire("submit");
const texts = () => list.children.map((li) => li.children[0].children[1].textContent);
seen.push(texts(), byId.summary.textContent);
list.children[0].children[0].children[0].fire("change");
seen.push(list.children[0].className, byId.summary.textContent);
list.children[1].children[1].fire("click");
seen.push(texts(), JSON.parse(store["appforge.todo.items"]));
seen.push(app.loadItems({ getItem: () => "not json" }));
console.log(JSON.stringify(seen));
"""
    assert run_app_in_fake_dom(tmp_path, AppKind.TODO, scenario) == [
        ["<b>Buy milk</b>", "Walk"],
        "2 items left of 2.",
        "item done",
        "1 item left of 2.",
        ["<b>Buy milk</b>"],
        [{"id": 1, "text": "<b>Buy milk</b>", "done": True}],
        [],
    ]


def test_counter_counts_from_buttons_and_keys(tmp_path: Path) -> None:
    setup = (
        'for (const a of ["increment", "decrement", "reset"]) buttons.push(button({ action: a }));'
    )
    scenario = """
const click = (i) => buttons[i].fire("click");
const seen = [];
click(0); click(0); click(0); click(1);
seen.push(byId.count.textContent);
document.fire("keydown", { key: "ArrowUp" }); seen.push(byId.count.textContent);
document.fire("keydown", { key: "-" }); document.fire("keydown", { key: "-" });
seen.push(byId.count.textContent);
click(2); seen.push(byId.count.textContent);
console.log(JSON.stringify(seen));
"""
    assert run_app_in_fake_dom(tmp_path, AppKind.COUNTER, scenario, setup) == ["2", "3", "1", "0"]


def test_notes_saves_lists_and_deletes(tmp_path: Path) -> None:
    scenario = """
const textarea = byId["note-text"];
const form = byId["note-form"];
const list = byId.notes;
const seen = [];
seen.push(list.children.map((li) => li.textContent));
textarea.value = "first";
form.fire("submit");
textarea.value = "second\\nline";
textarea.fire("keydown", { key: "Enter", ctrlKey: true });
seen.push(list.children.map((li) => li.children[0].textContent), byId.status.textContent);
seen.push(JSON.parse(store["appforge.notes"]).map((n) => n.text), textarea.value);
list.children[0].children[1].children[1].fire("click");
seen.push(list.children.map((li) => li.children[0].textContent), byId.status.textContent);
console.log(JSON.stringify(seen));
"""
    assert run_app_in_fake_dom(tmp_path, AppKind.NOTES, scenario) == [
        ["No notes yet."],
        ["second\nline", "first"],
        "Note saved.",
        ["second\nline", "first"],
        "",
        ["first"],
        "Note deleted.",
    ]


def test_plain_page_toggles_its_theme(tmp_path: Path) -> None:
    scenario = """
const seen = [];
byId.theme.fire("click");
seen.push(document.body.dataset.theme, byId.theme.attributes["aria-pressed"]);
byId.theme.fire("click");
seen.push(document.body.dataset.theme, byId.theme.attributes["aria-pressed"]);
console.log(JSON.stringify(seen));
"""
    assert run_app_in_fake_dom(tmp_path, AppKind.PLAIN, scenario) == [
        "dark",
        "true",
        "light",
        "false",
    ]


@pytest.mark.parametrize("kind", list(AppKind))
def test_app_js_loads_under_node_without_a_document(tmp_path: Path, kind: AppKind) -> None:
    exported = run_node(
        "console.log(JSON.stringify(Object.keys(require(process.argv[1]))));",
        write_app_js(tmp_path, kind),
    )
    assert exported
