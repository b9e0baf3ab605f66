"""The static apps the scripted model writes: index.html, styles.css and app.js of each kind.

Every app works offline (no CDN), never runs user input as code, writes user text only
through `textContent`, and its `app.js` touches `document` only when there is one, so the
pure logic it exports through `module.exports` can be tested under Node.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Final

INDEX_HTML: Final = "index.html"
STYLES_CSS: Final = "styles.css"
APP_JS: Final = "app.js"

_TITLE_LIMIT: Final = 60


@dataclass(frozen=True, kw_only=True)
class AppFiles:
    """The three files of one static app."""

    index_html: str
    styles_css: str
    app_js: str


def _page(*, title: str, body: str) -> str:
    """A whole HTML document around `body`; `title` must already be escaped."""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="stylesheet" href="{STYLES_CSS}">
  <script src="{APP_JS}" defer></script>
</head>
<body>
{body}
</body>
</html>
"""


_BASE_CSS: Final = """*,
*::before,
*::after {
  box-sizing: border-box;
}

:root {
  --bg: #f3f4f7;
  --fg: #1d2330;
  --muted: #5b6475;
  --surface: #ffffff;
  --border: #d3d8e0;
  --accent: #2559c9;
  --accent-fg: #ffffff;
  --danger: #b3261e;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  line-height: 1.5;
}

body {
  margin: 0;
  min-height: 100vh;
  padding: 2rem 1rem;
  background: var(--bg);
  color: var(--fg);
  display: flex;
  justify-content: center;
  align-items: flex-start;
}

.app {
  width: 100%;
  max-width: 30rem;
  padding: 1.5rem;
  background: var(--surface);
  border: 1px solid var(--border);
  border-radius: 12px;
  box-shadow: 0 4px 16px rgba(0, 0, 0, 0.06);
}

h1 {
  margin: 0 0 1rem;
  font-size: 1.5rem;
}

button,
input,
textarea {
  font: inherit;
  color: inherit;
}

button {
  cursor: pointer;
  padding: 0.5rem 0.9rem;
  border: 1px solid var(--border);
  border-radius: 8px;
  background: var(--surface);
}

button:hover {
  filter: brightness(0.95);
}

button:focus-visible,
input:focus-visible,
textarea:focus-visible {
  outline: 3px solid var(--accent);
  outline-offset: 2px;
}

.primary {
  background: var(--accent);
  border-color: var(--accent);
  color: var(--accent-fg);
}

.danger {
  color: var(--danger);
}

.hint,
.status {
  color: var(--muted);
  font-size: 0.9rem;
}
"""

# --- calculator -------------------------------------------------------------------------

_CALCULATOR_KEYS: Final = (
    ("key fn", 'data-action="clear"', "Clear", "C"),
    ("key fn", 'data-input="("', "Open parenthesis", "("),
    ("key fn", 'data-input=")"', "Close parenthesis", ")"),
    ("key op", 'data-input="/"', "Divide", "&divide;"),
    ("key", 'data-input="7"', "7", "7"),
    ("key", 'data-input="8"', "8", "8"),
    ("key", 'data-input="9"', "9", "9"),
    ("key op", 'data-input="*"', "Multiply", "&times;"),
    ("key", 'data-input="4"', "4", "4"),
    ("key", 'data-input="5"', "5", "5"),
    ("key", 'data-input="6"', "6", "6"),
    ("key op", 'data-input="-"', "Subtract", "&minus;"),
    ("key", 'data-input="1"', "1", "1"),
    ("key", 'data-input="2"', "2", "2"),
    ("key", 'data-input="3"', "3", "3"),
    ("key op", 'data-input="+"', "Add", "+"),
    ("key", 'data-input="0"', "0", "0"),
    ("key", 'data-input="."', "Decimal point", "."),
    ("key fn", 'data-action="backspace"', "Delete last", "&#9003;"),
    ("key equals", 'data-action="equals"', "Equals", "="),
)

_CALCULATOR_BUTTONS: Final = "\n".join(
    f'        <button type="button" class="{css}" {data} aria-label="{label}">{face}</button>'
    for css, data, label, face in _CALCULATOR_KEYS
)

_CALCULATOR_HTML: Final = _page(
    title="Calculator",
    body=f"""  <main class="app calculator">
    <h1>Calculator</h1>
    <section class="calc" aria-label="Calculator">
      <output id="display" class="display" aria-live="polite" aria-label="Display">0</output>
      <div class="keys" id="keys">
{_CALCULATOR_BUTTONS}
      </div>
    </section>
    <p class="hint">Keyboard: digits, + - * /, ( ), Enter for equals, Escape to clear,
      Backspace to delete the last character.</p>
  </main>""",
)

_CALCULATOR_CSS: Final = (
    _BASE_CSS
    + """
.calculator {
  max-width: 22rem;
}

.display {
  display: block;
  min-height: 3.5rem;
  margin-bottom: 1rem;
  padding: 0.75rem 1rem;
  border-radius: 8px;
  background: #1d2330;
  color: #ffffff;
  font-size: 1.75rem;
  font-variant-numeric: tabular-nums;
  text-align: right;
  overflow-wrap: anywhere;
}

.keys {
  display: grid;
  grid-template-columns: repeat(4, 1fr);
  gap: 0.5rem;
}

.key {
  padding: 0.9rem 0;
  font-size: 1.25rem;
}

.key.fn {
  background: #e6e9ef;
}

.key.op {
  background: #dbe5fb;
}

.key.equals {
  background: var(--accent);
  border-color: var(--accent);
  color: var(--accent-fg);
}
"""
)

_CALCULATOR_JS: Final = r""""use strict";

// The expression is parsed by hand (a tokenizer and a recursive-descent parser): user
// input is data and is never run as code.

const MAX_INPUT_LENGTH = 64;
const MAX_EXPRESSION_LENGTH = 256;
const SIGNIFICANT_DIGITS = 12;
const ERROR_DISPLAY = "Error";

const OPERATORS = new Map([
  ["+", "+"],
  ["-", "-"],
  ["\u2212", "-"],
  ["*", "*"],
  ["x", "*"],
  ["\u00d7", "*"],
  ["/", "/"],
  ["\u00f7", "/"],
]);

class CalcError extends Error {}

function isDigitOrPoint(ch) {
  return (ch >= "0" && ch <= "9") || ch === ".";
}

function parseNumber(text) {
  if (text === "." || text.split(".").length > 2) {
    throw new CalcError("Malformed number: " + text);
  }
  return Number(text);
}

function tokenize(expression) {
  const tokens = [];
  let i = 0;
  while (i < expression.length) {
    const ch = expression[i];
    if (ch.trim() === "") {
      i += 1;
    } else if (isDigitOrPoint(ch)) {
      let end = i;
      while (end < expression.length && isDigitOrPoint(expression[end])) {
        end += 1;
      }
      tokens.push({ kind: "number", value: parseNumber(expression.slice(i, end)) });
      i = end;
    } else if (OPERATORS.has(ch)) {
      tokens.push({ kind: "operator", value: OPERATORS.get(ch) });
      i += 1;
    } else if (ch === "(" || ch === ")") {
      tokens.push({ kind: ch, value: ch });
      i += 1;
    } else {
      throw new CalcError("Unexpected character: " + ch);
    }
  }
  return tokens;
}

// Grammar, lowest precedence first:
//   expression = term (("+" | "-") term)*
//   term       = unary (("*" | "/") unary)*
//   unary      = ("+" | "-") unary | primary
//   primary    = number | "(" expression ")"
function parse(tokens) {
  let position = 0;

  function isOperator(token, a, b) {
    return token !== undefined && token.kind === "operator" &&
      (token.value === a || token.value === b);
  }

  function expression() {
    let value = term();
    while (isOperator(tokens[position], "+", "-")) {
      const operator = tokens[position].value;
      position += 1;
      const right = term();
      value = operator === "+" ? value + right : value - right;
    }
    return value;
  }

  function term() {
    let value = unary();
    while (isOperator(tokens[position], "*", "/")) {
      const operator = tokens[position].value;
      position += 1;
      const right = unary();
      if (operator === "*") {
        value = value * right;
      } else if (right === 0) {
        throw new CalcError("Division by zero");
      } else {
        value = value / right;
      }
    }
    return value;
  }

  function unary() {
    if (isOperator(tokens[position], "+", "-")) {
      const operator = tokens[position].value;
      position += 1;
      const operand = unary();
      return operator === "-" ? -operand : operand;
    }
    return primary();
  }

  function primary() {
    const token = tokens[position];
    position += 1;
    if (token === undefined) {
      throw new CalcError("Incomplete expression");
    }
    if (token.kind === "number") {
      return token.value;
    }
    if (token.kind === "(") {
      const value = expression();
      const close = tokens[position];
      position += 1;
      if (close === undefined || close.kind !== ")") {
        throw new CalcError("Missing closing parenthesis");
      }
      return value;
    }
    throw new CalcError("Unexpected " + token.value);
  }

  const value = expression();
  if (position < tokens.length) {
    throw new CalcError("Unexpected " + tokens[position].value);
  }
  return value;
}

function roundResult(value) {
  if (!Number.isFinite(value)) {
    throw new CalcError("Result out of range");
  }
  // Rounding hides binary floating-point noise: 0.1 + 0.2 shows as 0.3.
  const rounded = Number(value.toPrecision(SIGNIFICANT_DIGITS));
  return rounded === 0 ? 0 : rounded; // no "-0"
}

// Pure: the value of an arithmetic expression, or an error, and what the display shows.
function evaluate(expression) {
  try {
    if (typeof expression !== "string" || expression.trim() === "") {
      throw new CalcError("Empty expression");
    }
    if (expression.length > MAX_EXPRESSION_LENGTH) {
      throw new CalcError("Expression too long");
    }
    const value = roundResult(parse(tokenize(expression)));
    return { ok: true, value: value, display: String(value), error: null };
  } catch (error) {
    const message = error instanceof CalcError ? error.message : "Invalid expression";
    return { ok: false, value: null, display: ERROR_DISPLAY, error: message };
  }
}

// Pure: what a key press means, or null when the calculator ignores it.
function keyToCommand(key) {
  if (key.length === 1 && ((key >= "0" && key <= "9") || "+-*/().".includes(key))) {
    return { action: "input", symbol: key };
  }
  if (key === "x" || key === "X") {
    return { action: "input", symbol: "*" };
  }
  if (key === "Enter" || key === "=") {
    return { action: "equals" };
  }
  if (key === "Escape" || key === "Delete" || key === "c" || key === "C") {
    return { action: "clear" };
  }
  if (key === "Backspace") {
    return { action: "backspace" };
  }
  return null;
}

function prettify(expression) {
  return expression
    .split("*").join("\u00d7")
    .split("/").join("\u00f7")
    .split("-").join("\u2212");
}

function createCalculator(display) {
  let expression = "";
  let showingResult = false;

  function show(text) {
    display.textContent = text;
  }

  function input(symbol) {
    if (showingResult) {
      // An operator goes on from the result; anything else starts a new expression.
      if (!OPERATORS.has(symbol)) {
        expression = "";
      }
      showingResult = false;
    }
    if (expression.length >= MAX_INPUT_LENGTH) {
      return;
    }
    expression += symbol;
    show(prettify(expression));
  }

  function equals() {
    if (expression === "") {
      return;
    }
    const result = evaluate(expression);
    show(result.ok ? prettify(result.display) : result.display);
    // An error, or a result in exponent notation, cannot be typed on.
    expression = result.ok && !result.display.includes("e") ? result.display : "";
    showingResult = true;
  }

  function clear() {
    expression = "";
    showingResult = false;
    show("0");
  }

  function backspace() {
    if (showingResult) {
      clear();
      return;
    }
    expression = expression.slice(0, -1);
    show(expression === "" ? "0" : prettify(expression));
  }

  function run(command) {
    if (command.action === "input") {
      input(command.symbol);
    } else if (command.action === "equals") {
      equals();
    } else if (command.action === "clear") {
      clear();
    } else if (command.action === "backspace") {
      backspace();
    }
  }

  return { run: run };
}

function start() {
  const display = document.getElementById("display");
  const keys = document.getElementById("keys");
  const calculator = createCalculator(display);

  keys.addEventListener("click", function (event) {
    const button = event.target.closest("button");
    if (button === null) {
      return;
    }
    if (button.dataset.input !== undefined) {
      calculator.run({ action: "input", symbol: button.dataset.input });
    } else {
      calculator.run({ action: button.dataset.action });
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const command = keyToCommand(event.key);
    if (command !== null) {
      event.preventDefault();
      calculator.run(command);
    }
  });
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { evaluate, tokenize, keyToCommand };
}
"""

CALCULATOR: Final = AppFiles(
    index_html=_CALCULATOR_HTML, styles_css=_CALCULATOR_CSS, app_js=_CALCULATOR_JS
)

# --- todo -------------------------------------------------------------------------------

_TODO_HTML: Final = _page(
    title="To-do list",
    body="""  <main class="app todo">
    <h1>To-do list</h1>
    <form id="add-form" class="add-form">
      <label for="new-item">New item</label>
      <div class="row">
        <input id="new-item" name="text" type="text" maxlength="200" autocomplete="off" required>
        <button type="submit" class="primary">Add</button>
      </div>
    </form>
    <ul id="items" class="items" aria-label="Items"></ul>
    <p id="summary" class="status" aria-live="polite">Nothing to do yet.</p>
  </main>""",
)

_TODO_CSS: Final = (
    _BASE_CSS
    + """
.add-form label {
  display: block;
  margin-bottom: 0.25rem;
  font-weight: 600;
}

.row {
  display: flex;
  gap: 0.5rem;
}

.row input {
  flex: 1;
  padding: 0.5rem 0.75rem;
  border: 1px solid var(--border);
  border-radius: 8px;
}

.items {
  list-style: none;
  margin: 1rem 0;
  padding: 0;
}

.item {
  display: flex;
  align-items: center;
  justify-content: space-between;
  gap: 0.5rem;
  padding: 0.5rem 0;
  border-bottom: 1px solid var(--border);
}

.item label {
  display: flex;
  align-items: center;
  gap: 0.5rem;
  overflow-wrap: anywhere;
}

.item.done span {
  color: var(--muted);
  text-decoration: line-through;
}
"""
)

_TODO_JS: Final = r""""use strict";

const STORAGE_KEY = "appforge.todo.items";

// Pure list operations: each returns a new list.
function addItem(items, text) {
  const trimmed = String(text).trim();
  if (trimmed === "") {
    return items;
  }
  const id = items.reduce(function (max, item) { return Math.max(max, item.id); }, 0) + 1;
  return items.concat([{ id: id, text: trimmed, done: false }]);
}

function toggleItem(items, id) {
  return items.map(function (item) {
    return item.id === id ? { id: item.id, text: item.text, done: !item.done } : item;
  });
}

function removeItem(items, id) {
  return items.filter(function (item) { return item.id !== id; });
}

function remaining(items) {
  return items.filter(function (item) { return !item.done; }).length;
}

function isItem(value) {
  return value !== null && typeof value === "object" && typeof value.id === "number" &&
    typeof value.text === "string" && typeof value.done === "boolean";
}

function loadItems(storage) {
  if (storage === null) {
    return [];
  }
  try {
    const parsed = JSON.parse(storage.getItem(STORAGE_KEY) || "[]");
    return Array.isArray(parsed) ? parsed.filter(isItem) : [];
  } catch (error) {
    return [];
  }
}

function saveItems(storage, items) {
  if (storage === null) {
    return;
  }
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify(items));
  } catch (error) {
    // Storage full or blocked: the list still works for this visit.
  }
}

function browserStorage() {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch (error) {
    return null;
  }
}

function start() {
  const storage = browserStorage();
  const form = document.getElementById("add-form");
  const input = document.getElementById("new-item");
  const list = document.getElementById("items");
  const summary = document.getElementById("summary");
  let items = loadItems(storage);

  function update(next) {
    items = next;
    saveItems(storage, items);
    render();
  }

  function render() {
    list.replaceChildren();
    for (const item of items) {
      const row = document.createElement("li");
      row.className = item.done ? "item done" : "item";
      const label = document.createElement("label");
      const checkbox = document.createElement("input");
      checkbox.type = "checkbox";
      checkbox.checked = item.done;
      checkbox.addEventListener("change", function () { update(toggleItem(items, item.id)); });
      const text = document.createElement("span");
      text.textContent = item.text;
      label.append(checkbox, text);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "danger";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", "Delete " + item.text);
      remove.addEventListener("click", function () { update(removeItem(items, item.id)); });
      row.append(label, remove);
      list.append(row);
    }
    const left = remaining(items);
    summary.textContent = items.length === 0
      ? "Nothing to do yet."
      : left + (left === 1 ? " item" : " items") + " left of " + items.length + ".";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    update(addItem(items, input.value));
    input.value = "";
    input.focus();
  });

  render();
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { addItem, toggleItem, removeItem, remaining, loadItems, saveItems };
}
"""

TODO: Final = AppFiles(index_html=_TODO_HTML, styles_css=_TODO_CSS, app_js=_TODO_JS)

# --- counter ----------------------------------------------------------------------------

_COUNTER_HTML: Final = _page(
    title="Counter",
    body="""  <main class="app counter">
    <h1>Counter</h1>
    <output id="count" class="count" aria-live="polite" aria-label="Count">0</output>
    <div class="controls">
      <button type="button" data-action="decrement" aria-label="Decrement">&minus;1</button>
      <button type="button" data-action="reset">Reset</button>
      <button type="button" class="primary" data-action="increment"
        aria-label="Increment">+1</button>
    </div>
    <p class="hint">Keyboard: + or ArrowUp, - or ArrowDown, 0 to reset.</p>
  </main>""",
)

_COUNTER_CSS: Final = (
    _BASE_CSS
    + """
.counter {
  max-width: 20rem;
  text-align: center;
}

.count {
  display: block;
  margin: 1rem 0;
  font-size: 4rem;
  font-weight: 700;
  font-variant-numeric: tabular-nums;
}

.controls {
  display: flex;
  justify-content: center;
  gap: 0.5rem;
}

.controls button {
  min-width: 4.5rem;
  font-size: 1.1rem;
}
"""
)

_COUNTER_JS: Final = r""""use strict";

// Pure: the count after an action.
function applyAction(count, action) {
  if (action === "increment") {
    return count + 1;
  }
  if (action === "decrement") {
    return count - 1;
  }
  if (action === "reset") {
    return 0;
  }
  return count;
}

// Pure: what a key press means, or null when the counter ignores it.
function keyToAction(key) {
  if (key === "+" || key === "=" || key === "ArrowUp") {
    return "increment";
  }
  if (key === "-" || key === "ArrowDown") {
    return "decrement";
  }
  if (key === "0") {
    return "reset";
  }
  return null;
}

function start() {
  const display = document.getElementById("count");
  let count = 0;

  function run(action) {
    count = applyAction(count, action);
    display.textContent = String(count);
  }

  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", function () { run(button.dataset.action); });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const action = keyToAction(event.key);
    if (action !== null) {
      event.preventDefault();
      run(action);
    }
  });
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { applyAction, keyToAction };
}
"""

COUNTER: Final = AppFiles(index_html=_COUNTER_HTML, styles_css=_COUNTER_CSS, app_js=_COUNTER_JS)

# --- notes ------------------------------------------------------------------------------

_NOTES_HTML: Final = _page(
    title="Notes",
    body="""  <main class="app notes">
    <h1>Notes</h1>
    <form id="note-form" class="note-form">
      <label for="note-text">New note</label>
      <textarea id="note-text" name="text" rows="5" maxlength="10000" required></textarea>
      <div class="row">
        <button type="submit" class="primary">Save note</button>
        <p id="status" class="status" role="status"></p>
      </div>
    </form>
    <h2>Saved notes</h2>
    <ul id="notes" class="note-list" aria-label="Saved notes"></ul>
    <p class="hint">Ctrl+Enter saves too.</p>
  </main>""",
)

_NOTES_CSS: Final = (
    _BASE_CSS
    + """
.note-form label {
  display: block;
  margin-bottom: 0.25rem;
  font-weight: 600;
}

.note-form textarea {
  width: 100%;
  padding: 0.5rem 0.75rem;
  border: 1px solid var(--border);
  border-radius: 8px;
  resize: vertical;
}

.row {
  display: flex;
  align-items: center;
  gap: 0.75rem;
  margin-top: 0.5rem;
}

h2 {
  margin: 1.5rem 0 0.5rem;
  font-size: 1.1rem;
}

.note-list {
  list-style: none;
  margin: 0;
  padding: 0;
}

.note {
  padding: 0.75rem 0;
  border-bottom: 1px solid var(--border);
}

.note p {
  margin: 0 0 0.25rem;
  white-space: pre-wrap;
  overflow-wrap: anywhere;
}

.note footer {
  display: flex;
  align-items: center;
  justify-content: space-between;
  color: var(--muted);
  font-size: 0.85rem;
}
"""
)

_NOTES_JS: Final = r""""use strict";

const STORAGE_KEY = "appforge.notes";

// Pure list operations: each returns a new list, newest note first.
function addNote(notes, text, savedAt) {
  const trimmed = String(text).trim();
  if (trimmed === "") {
    return notes;
  }
  const id = notes.reduce(function (max, note) { return Math.max(max, note.id); }, 0) + 1;
  return [{ id: id, text: trimmed, savedAt: savedAt }].concat(notes);
}

function removeNote(notes, id) {
  return notes.filter(function (note) { return note.id !== id; });
}

function isNote(value) {
  return value !== null && typeof value === "object" && typeof value.id === "number" &&
    typeof value.text === "string" && typeof value.savedAt === "string";
}

function loadNotes(storage) {
  if (storage === null) {
    return [];
  }
  try {
    const parsed = JSON.parse(storage.getItem(STORAGE_KEY) || "[]");
    return Array.isArray(parsed) ? parsed.filter(isNote) : [];
  } catch (error) {
    return [];
  }
}

function saveNotes(storage, notes) {
  if (storage === null) {
    return false;
  }
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify(notes));
    return true;
  } catch (error) {
    return false;
  }
}

function browserStorage() {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch (error) {
    return null;
  }
}

function start() {
  const storage = browserStorage();
  const form = document.getElementById("note-form");
  const textarea = document.getElementById("note-text");
  const list = document.getElementById("notes");
  const status = document.getElementById("status");
  let notes = loadNotes(storage);

  function update(next, message) {
    notes = next;
    const saved = saveNotes(storage, notes);
    status.textContent = saved ? message : message + " (not stored: storage is unavailable)";
    render();
  }

  function render() {
    list.replaceChildren();
    if (notes.length === 0) {
      const empty = document.createElement("li");
      empty.className = "status";
      empty.textContent = "No notes yet.";
      list.append(empty);
    }
    for (const note of notes) {
      const row = document.createElement("li");
      row.className = "note";
      const text = document.createElement("p");
      text.textContent = note.text;
      const footer = document.createElement("footer");
      const time = document.createElement("time");
      time.dateTime = note.savedAt;
      time.textContent = new Date(note.savedAt).toLocaleString();
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "danger";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", "Delete note saved " + time.textContent);
      remove.addEventListener("click", function () {
        update(removeNote(notes, note.id), "Note deleted.");
      });
      footer.append(time, remove);
      row.append(text, footer);
      list.append(row);
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (textarea.value.trim() === "") {
      return;
    }
    update(addNote(notes, textarea.value, new Date().toISOString()), "Note saved.");
    textarea.value = "";
    textarea.focus();
  });

  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  render();
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { addNote, removeNote, loadNotes, saveNotes };
}
"""

NOTES: Final = AppFiles(index_html=_NOTES_HTML, styles_css=_NOTES_CSS, app_js=_NOTES_JS)

# --- plain page -------------------------------------------------------------------------

_PLAIN_CSS: Final = (
    _BASE_CSS
    + """
.plain h1 {
  overflow-wrap: anywhere;
}

body[data-theme="dark"] {
  --bg: #12151c;
  --fg: #e8ebf2;
  --muted: #a3abbb;
  --surface: #1c212b;
  --border: #343b4a;
}
"""
)

_PLAIN_JS: Final = r""""use strict";

// Pure: the theme after a toggle.
function nextTheme(theme) {
  return theme === "dark" ? "light" : "dark";
}

function start() {
  const button = document.getElementById("theme");
  button.addEventListener("click", function () {
    const theme = nextTheme(document.body.dataset.theme || "light");
    document.body.dataset.theme = theme;
    button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
  });
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { nextTheme };
}
"""


def plain_page(prompt: str) -> AppFiles:
    """A simple page whose heading is the prompt, HTML-escaped; the prompt never reaches JS."""
    text = " ".join(prompt.split()) or "Your app"
    title = text if len(text) <= _TITLE_LIMIT else text[: _TITLE_LIMIT - 3].rstrip() + "..."
    body = f"""  <main class="app plain">
    <h1>{html.escape(text)}</h1>
    <p>This page was generated by appforge from your request.</p>
    <button type="button" id="theme" aria-pressed="false">Dark theme</button>
  </main>"""
    return AppFiles(
        index_html=_page(title=html.escape(title), body=body),
        styles_css=_PLAIN_CSS,
        app_js=_PLAIN_JS,
    )
