"""What a bench build says, turn by turn: its length, each turn's text and tool calls, and
what the sandbox answers to them. The fake model and the baseline both follow it."""

from __future__ import annotations

import json
import random
from typing import Any

from .config import BenchConfig

INDEX_HTML = (
    '<!doctype html><html><head><meta charset="utf-8"><title>Bench page</title>'
    '<link rel="stylesheet" href="styles.css"></head><body><main id="app">'
    "<h1>Bench page</h1><p>Built step by step.</p></main>"
    '<script type="module" src="src/part1.js"></script></body></html>'
)
FINAL_TEXT = "The page is ready: index.html and one script per step. Open it to try it."


def build_turns(n: int, config: BenchConfig) -> int:
    """How many turns build number `n` of a phase has: 2 to `max_turns`, `turns` on average."""
    return random.Random(n).randint(2, config.max_turns)


def turn_text(turn: int) -> str:
    return f"Step {turn + 1}: I write src/part{turn + 1}.js, then look at the files."


def turn_calls(turn: int, calls: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(call_id, tool, arguments) of a turn with tools: one small write, then reads."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for index in range(calls):
        call_id = f"call_{turn}_{index}"
        if index == 0:
            path = "index.html" if turn == 0 else f"src/part{turn}.js"
            content = INDEX_HTML if turn == 0 else f'export const part{turn} = "step {turn}";\n'
            out.append((call_id, "write_file", {"path": path, "content": content}))
        elif index % 2 == 1:
            out.append((call_id, "list_files", {}))
        else:
            out.append((call_id, "read_file", {"path": "index.html"}))
    return out


def tool_result(turn: int, name: str, arguments: dict[str, Any]) -> str:
    """What the sandbox answers for this call of this turn (same shapes and sizes)."""
    if name == "write_file":
        size = len(str(arguments["content"]).encode())
        return json.dumps({"path": arguments["path"], "bytes": size, "created": True})
    if name == "read_file":
        return json.dumps({"path": "index.html", "content": INDEX_HTML})
    files = [{"path": "index.html", "bytes": len(INDEX_HTML)}]
    files += [{"path": f"src/part{n}.js", "bytes": 37} for n in range(1, turn + 1)]
    return json.dumps({"files": sorted(files, key=lambda f: str(f["path"]))})
