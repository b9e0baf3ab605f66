"""What the scripted-model modules share: a prompt for each app kind, a tiny in-memory
sandbox, and the files the model writes for a kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appforge.services.builder.models.base import (
    DELETE_FILE,
    LIST_FILES,
    READ_FILE,
    WRITE_FILE,
    Exchange,
    ToolRequest,
    ToolResult,
)
from appforge.services.builder.models.scripted import AppKind, ScriptedModel

APP_FILES = {"index.html", "styles.css", "app.js"}
XSS_PROMPT = '<script>alert(1)</script> & "friends"'

PROMPTS = {
    AppKind.CALCULATOR: "build a calculator",
    AppKind.TODO: "Make me a TODO app",
    AppKind.COUNTER: "a clicker for my workouts",
    AppKind.NOTES: "I need a notepad",
    AppKind.PLAIN: XSS_PROMPT,
}


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


def app_files_for(kind: AppKind) -> dict[str, str]:
    """The files the model writes for `kind`'s prompt when every call succeeds."""
    model = ScriptedModel()
    sandbox = MemorySandbox()
    history: list[Exchange] = []
    for _ in range(2):
        turn = model.turn(PROMPTS[kind], history)
        history.append(Exchange(turn=turn, results=tuple(map(sandbox.run, turn.tool_calls))))
    return sandbox.files
