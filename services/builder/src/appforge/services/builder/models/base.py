"""The model provider interface: the turns a model answers and the tools it may call.

A build is a conversation. Each step the builder asks the model for its next `Turn` (text
and a batch of tool calls), runs the batch, and records both as an `Exchange`. A turn
without tool calls ends the conversation. A model that generates its text gradually hands
each piece to the caller's `on_text` as it comes, so the text streams into the flow while
the turn is still being answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

WRITE_FILE: Final = "write_file"
READ_FILE: Final = "read_file"
DELETE_FILE: Final = "delete_file"
LIST_FILES: Final = "list_files"
TOOL_NAMES: Final = frozenset({WRITE_FILE, READ_FILE, DELETE_FILE, LIST_FILES})


class ModelError(Exception):
    """The model could not answer a turn; `retryable` says whether asking again may help.

    Part of the interface, not of one provider: the builder fails an execution whose model
    raised it, whichever model it was.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True, kw_only=True)
class ToolRequest:
    """One tool call the model asks for; `arguments` is JSON-shaped and treated as read-only."""

    call_id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """What one tool call gave back: an output when `ok`, else an error message."""

    call_id: str
    ok: bool
    output: Mapping[str, Any] | None = None
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class Turn:
    """The model's answer for one step: text, then a batch of tool calls (none: it is done)."""

    text: str = ""
    tool_calls: tuple[ToolRequest, ...] = ()

    @property
    def done(self) -> bool:
        return not self.tool_calls


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """One step of the conversation: the model's turn and the results of its tool calls."""

    turn: Turn
    results: tuple[ToolResult, ...] = ()


TextSink: TypeAlias = Callable[[str], Awaitable[None]]
"""Receives a turn's text piece by piece as the model generates it."""


class Model(Protocol):
    """A model provider: given the user's prompt and the steps so far, the next turn.

    With `on_text`, a model that generates its text gradually awaits `on_text(piece)` for
    each piece as it comes, in order, before `next_turn` returns; the pieces joined must be
    the start of the returned turn's text (normally all of it: the caller adds whatever
    was not streamed). A model may also stream nothing and return the whole text at once.
    An exception `on_text` raises (the flow could not be written) ends the turn: the model
    lets it propagate unchanged. One model serves many executions at once, so the sink is
    per call, never per model.
    """

    @property
    def name(self) -> str: ...

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn: ...


_PATH: Final = {
    "type": "string",
    "description": "Path relative to the app's root, with '/' as separator, e.g. 'index.html' "
    "or 'js/app.js'. Absolute paths and '..' are rejected.",
    "minLength": 1,
}


def _function(name: str, description: str, **properties: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool whose every property is required."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                **({"required": list(properties)} if properties else {}),
                "additionalProperties": False,
            },
        },
    }


# The OpenAI chat-completions "tools" format. Treat as read-only: providers serialise it.
TOOL_SCHEMAS: Final[tuple[dict[str, Any], ...]] = (
    _function(
        WRITE_FILE,
        "Create or overwrite a text file of the app with the given content.",
        path=_PATH,
        content={"type": "string", "description": "The whole file, as UTF-8 text."},
    ),
    _function(READ_FILE, "Read a text file of the app.", path=_PATH),
    _function(DELETE_FILE, "Delete a file of the app.", path=_PATH),
    _function(LIST_FILES, "List the app's files with their sizes in bytes."),
)
