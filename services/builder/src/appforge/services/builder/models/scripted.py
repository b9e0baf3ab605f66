"""The scripted model: deterministic and offline, it builds real static apps from templates.

It picks the kind of app from keywords in the prompt and plans it the way a real model
would, in steps: the page and its styles, then the logic and a look at the files, then a
closing summary. The same prompt always yields the same turns and the same call ids.

Its text streams the way a real model's does: a word at a time (`text_chunks`), with
`chunk_delay` seconds between words (APPFORGE_SCRIPTED_STREAM_MS; 0, the default here and
in tests, hands every word over at once). The pace changes only how the text arrives,
never the turns or the files.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from appforge.services.builder.models.base import (
    LIST_FILES,
    WRITE_FILE,
    Exchange,
    TextSink,
    ToolRequest,
    ToolResult,
    Turn,
)
from appforge.services.builder.models.templates import (
    APP_JS,
    CALCULATOR,
    COUNTER,
    INDEX_HTML,
    NOTES,
    STYLES_CSS,
    TODO,
    AppFiles,
    plain_page,
)


class AppKind(StrEnum):
    """The apps the scripted model knows how to build."""

    CALCULATOR = "calculator"
    TODO = "todo"
    COUNTER = "counter"
    NOTES = "notes"
    PLAIN = "plain"


# Checked in this order, so "a todo list with notes" is a todo list. Keywords match whole
# words (an optional plural "s" allowed): "calc" finds "calc" but not "calcium".
_KEYWORDS: Final[tuple[tuple[AppKind, tuple[str, ...]], ...]] = (
    (AppKind.CALCULATOR, ("calculator", "calc")),
    (AppKind.TODO, ("todo", "to-do", "task list", "tasks")),
    (AppKind.COUNTER, ("counter", "clicker")),
    (AppKind.NOTES, ("note", "notes", "notepad")),
)

_PATTERNS: Final = tuple(
    (kind, re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")s?\b", re.IGNORECASE))
    for kind, words in _KEYWORDS
)


# A word with the whitespace before it, as model tokens come; leading whitespace of its own.
_CHUNK: Final = re.compile(r"\s*\S+|\s+")


def text_chunks(text: str) -> list[str]:
    """`text` a word at a time, each with the whitespace before it: joined, `text` again."""
    return _CHUNK.findall(text)


def classify(prompt: str) -> AppKind:
    """The kind of app `prompt` asks for: the first kind with a keyword in it, else PLAIN."""
    for kind, pattern in _PATTERNS:
        if pattern.search(prompt):
            return kind
    return AppKind.PLAIN


@dataclass(frozen=True, kw_only=True)
class _Narrative:
    """What the model says at each step of building one kind of app."""

    plan: str
    logic: str
    summary: str


_NARRATIVES: Final[Mapping[AppKind, _Narrative]] = {
    AppKind.CALCULATOR: _Narrative(
        plan=(
            "I'll build a calculator: a display and a keypad with the digits, add, subtract, "
            "multiply and divide, a decimal point, parentheses, clear and equals, all usable "
            "from the keyboard too. First the page and its styles."
        ),
        logic=(
            "Now the logic in app.js: a tokenizer and a recursive-descent parser that respect "
            "operator precedence, unary minus and decimals, round away floating-point noise, "
            "and show Error on division by zero. The input is parsed, never run as code. "
            "Then I'll check the files."
        ),
        summary=(
            "Your calculator is ready. Type with the keypad or the keyboard (Enter for equals, "
            "Escape to clear, Backspace to delete the last character)."
        ),
    ),
    AppKind.TODO: _Narrative(
        plan=(
            "I'll build a to-do list: a form to add items and a list where each item can be "
            "completed or deleted. First the page and its styles."
        ),
        logic=(
            "Now the logic in app.js: adding, completing and deleting items, a count of what "
            "is left, and saving the list to localStorage when the browser allows it. "
            "Then I'll check the files."
        ),
        summary=(
            "Your to-do list is ready. Items you add, complete or delete are kept in this "
            "browser's local storage."
        ),
    ),
    AppKind.COUNTER: _Narrative(
        plan=(
            "I'll build a counter: a large display with buttons to increment, decrement and "
            "reset it. First the page and its styles."
        ),
        logic=(
            "Now the logic in app.js: the three actions on the count, also from the keyboard "
            "(+ and - or the arrow keys, 0 to reset). Then I'll check the files."
        ),
        summary="Your counter is ready. Click the buttons or use the keyboard.",
    ),
    AppKind.NOTES: _Narrative(
        plan=(
            "I'll build a notes page: a text area to write a note, a save button and the list "
            "of saved notes. First the page and its styles."
        ),
        logic=(
            "Now the logic in app.js: saving notes to localStorage, newest first, with their "
            "time and a delete button each. Then I'll check the files."
        ),
        summary=(
            "Your notes page is ready. Saved notes stay in this browser's local storage; "
            "Ctrl+Enter saves too."
        ),
    ),
    AppKind.PLAIN: _Narrative(
        plan=(
            "I'll build a simple page for your request, with it as the heading. First the "
            "page and its styles."
        ),
        logic="Now a little script for a light and dark theme. Then I'll check the files.",
        summary="Your page is ready.",
    ),
}

_EXPECTED_FILES: Final = (INDEX_HTML, STYLES_CSS, APP_JS)


def call_id(prompt: str, turn: int, index: int) -> str:
    """The id of the `index`-th call of turn `turn`: stable for the same prompt."""
    key = f"{turn}\x00{index}\x00{prompt}".encode("utf-8", "surrogatepass")
    return f"call_{turn}_{index}_{hashlib.sha256(key).hexdigest()[:8]}"


def app_files(prompt: str) -> AppFiles:
    """The files the scripted model writes for `prompt`."""
    kind = classify(prompt)
    if kind is AppKind.CALCULATOR:
        return CALCULATOR
    if kind is AppKind.TODO:
        return TODO
    if kind is AppKind.COUNTER:
        return COUNTER
    if kind is AppKind.NOTES:
        return NOTES
    return plain_page(prompt)


@dataclass(frozen=True, kw_only=True)
class _Failure:
    """A tool call that failed, or that got no result at all."""

    request: ToolRequest
    result: ToolResult | None

    def describe(self) -> str:
        path = self.request.arguments.get("path")
        target = f" {path}" if isinstance(path, str) else ""
        what = f"{self.request.name}{target} ({self.request.call_id})"
        if self.result is None:
            return f"{what} got no result"
        return f"{what} failed: {self.result.error or 'no error message'}"


def _failures(history: Sequence[Exchange]) -> list[_Failure]:
    failures = []
    for exchange in history:
        results = {result.call_id: result for result in exchange.results}
        for request in exchange.turn.tool_calls:
            result = results.get(request.call_id)
            if result is None or not result.ok:
                failures.append(_Failure(request=request, result=result))
    return failures


def _failure_text(failures: Sequence[_Failure]) -> str:
    described = "; ".join(failure.describe() for failure in failures)
    return (
        f"I stopped because a tool call did not succeed: {described}. "
        "The app is incomplete, so I made no further changes."
    )


def _listed_paths(output: Mapping[str, Any] | None) -> set[str] | None:
    """The paths in a `list_files` output (`{"files": [{"path": ...}, ...]}` or plain path
    strings), or None when it has another shape."""
    files = output.get("files") if output is not None else None
    if not isinstance(files, list):
        return None
    paths = set()
    for entry in files:
        path = entry.get("path") if isinstance(entry, Mapping) else entry
        if not isinstance(path, str):
            return None
        paths.add(path)
    return paths


def _last_listing(history: Sequence[Exchange]) -> set[str] | None:
    """The paths of the last `list_files` result with a known shape, if any."""
    for exchange in reversed(history):
        results = {result.call_id: result for result in exchange.results}
        for request in reversed(exchange.turn.tool_calls):
            result = results.get(request.call_id)
            if request.name == LIST_FILES and result is not None:
                paths = _listed_paths(result.output)
                if paths is not None:
                    return paths
    return None


def _closing_text(narrative: _Narrative, history: Sequence[Exchange]) -> str:
    listed = _last_listing(history)
    missing = [path for path in _EXPECTED_FILES if listed is not None and path not in listed]
    if missing:
        return (
            f"The file list is missing {', '.join(missing)}, so the app is incomplete. "
            "I stopped here."
        )
    return f"{narrative.summary} Files: {', '.join(_EXPECTED_FILES)}."


def _write(prompt: str, turn: int, index: int, path: str, content: str) -> ToolRequest:
    return ToolRequest(
        call_id=call_id(prompt, turn, index),
        name=WRITE_FILE,
        arguments={"path": path, "content": content},
    )


class ScriptedModel:
    """Deterministic, offline model: three turns per build, two of them with a tool batch.

    Turn 0 writes index.html and styles.css, turn 1 writes app.js and lists the files, turn 2
    (and any later one) closes with a summary. If any earlier call failed or got no result,
    the next turn names it and stops instead.
    """

    name: Final = "scripted"

    def __init__(
        self,
        *,
        chunk_delay: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if chunk_delay < 0:
            raise ValueError(f"chunk_delay must not be negative, got {chunk_delay}")
        self.chunk_delay = chunk_delay
        self._sleep = sleep

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn:
        turn = self.turn(prompt, history)
        if on_text is not None:
            for n, chunk in enumerate(text_chunks(turn.text)):
                if n and self.chunk_delay:
                    await self._sleep(self.chunk_delay)
                await on_text(chunk)
        return turn

    def turn(self, prompt: str, history: Sequence[Exchange]) -> Turn:
        """The next turn, computed synchronously: `next_turn` without the coroutine."""
        failures = _failures(history)
        if failures:
            return Turn(text=_failure_text(failures))
        narrative = _NARRATIVES[classify(prompt)]
        index = len(history)
        if index == 0:
            files = app_files(prompt)
            return Turn(
                text=narrative.plan,
                tool_calls=(
                    _write(prompt, 0, 0, INDEX_HTML, files.index_html),
                    _write(prompt, 0, 1, STYLES_CSS, files.styles_css),
                ),
            )
        if index == 1:
            files = app_files(prompt)
            return Turn(
                text=narrative.logic,
                tool_calls=(
                    _write(prompt, 1, 0, APP_JS, files.app_js),
                    ToolRequest(call_id=call_id(prompt, 1, 1), name=LIST_FILES, arguments={}),
                ),
            )
        return Turn(text=_closing_text(narrative, history))
