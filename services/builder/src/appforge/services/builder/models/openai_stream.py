"""The streamed answer of an OpenAI-compatible chat completion, parsed into a `Turn`.

Server-Sent Events lines become JSON chunks (`parse_sse_line`); `TurnAssembler` folds the
chunks into text and tool calls, whose arguments arrive as JSON fragments spread over many
deltas and are parsed only once the stream ends. Pure: no HTTP here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from appforge.services.builder.models.base import ModelError, ToolRequest, Turn

_DONE_MARKER: Final = "[DONE]"
_ERROR_TEXT_LIMIT: Final = 500


@dataclass(kw_only=True)
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class TurnAssembler:
    """Folds the streamed chunks of one completion into a `Turn`."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    finish_reason: str | None = None
    done: bool = False
    streamed: bool = False  # some text already went to the caller's `on_text`

    def add_chunk(self, chunk: Mapping[str, Any]) -> str:
        """Fold one chunk in; returns the text it added (possibly empty)."""
        error = chunk.get("error")
        if error is not None:
            raise ModelError(f"the model reported an error: {error_text(error)}", retryable=False)
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta") or {}
        for call_delta in delta.get("tool_calls") or []:
            self._add_call_delta(call_delta)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.text.append(content)
            return content
        return ""

    def _add_call_delta(self, call_delta: Mapping[str, Any]) -> None:
        index = int(call_delta.get("index", len(self.calls)))
        call = self.calls.setdefault(index, _PartialCall())
        if call_delta.get("id"):
            call.call_id = str(call_delta["id"])
        function = call_delta.get("function") or {}
        if function.get("name"):
            call.name += str(function["name"])
        if function.get("arguments"):
            call.arguments.append(str(function["arguments"]))

    @property
    def complete(self) -> bool:
        """Whether the stream ended properly rather than being cut off."""
        return self.done or self.finish_reason is not None

    def turn(self) -> Turn:
        """The assembled turn; raises a non-retryable `ModelError` on malformed arguments."""
        calls = tuple(
            _tool_request(index, self.calls[index]) for index in sorted(self.calls.keys())
        )
        return Turn(text="".join(self.text), tool_calls=calls)


def _tool_request(index: int, call: _PartialCall) -> ToolRequest:
    if not call.name:
        raise ModelError(f"tool call #{index} has no function name", retryable=False)
    raw = "".join(call.arguments)
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"tool call #{index} ({call.name}) has arguments that are not valid JSON: "
            f"{exc.msg} at position {exc.pos} in {clip_error(raw)!r}",
            retryable=False,
        ) from exc
    if not isinstance(arguments, dict):
        raise ModelError(
            f"tool call #{index} ({call.name}) has arguments that are not a JSON object: "
            f"{clip_error(raw)!r}",
            retryable=False,
        )
    return ToolRequest(call_id=call.call_id or f"call_{index}", name=call.name, arguments=arguments)


def parse_sse_line(line: str) -> Mapping[str, Any] | None:
    """The JSON payload of one SSE line: None for `data: [DONE]`, `{}` for anything else.

    Comments (`:`), blank lines and other fields yield `{}`; a `data:` line that is not a JSON
    object raises a retryable `ModelError` (a garbled stream may be transient).
    """
    if not line.startswith("data:"):
        return {}
    data = line[len("data:") :].strip()
    if data == _DONE_MARKER:
        return None
    if not data:
        return {}
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"the stream sent a chunk that is not JSON: {clip_error(data)!r}", retryable=True
        ) from exc
    if not isinstance(payload, dict):
        raise ModelError(
            f"the stream sent a chunk that is not an object: {clip_error(data)!r}", retryable=True
        )
    return payload


def clip_error(text: str) -> str:
    """`text`, cut to what an error message should quote."""
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "…"


def error_text(error: Any) -> str:
    """The message of an error object the endpoint sent (`{"message": ...}`), clipped."""
    if isinstance(error, Mapping):
        message = error.get("message")
        if isinstance(message, str) and message:
            return clip_error(message)
    return clip_error(str(error))
