"""The logic of the apps the scripted model writes, run under Node: the calculator's
evaluator, and each app driven through a minimal fake DOM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appforge.services.builder.models.scripted import AppKind
from tests.app_checks import run_node
from tests.unit.scripted_model_helpers import app_files_for


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
