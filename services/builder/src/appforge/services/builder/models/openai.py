"""The `openai` model: any OpenAI-compatible `/v1/chat/completions` endpoint, streamed.

Each turn is one streaming request carrying the whole conversation: a system message, the
user's prompt, then per step the assistant's text and tool calls and one `tool` message per
call. The Server-Sent Events answer is assembled into a `Turn` by `openai_stream`; this
module is the HTTP side: the request, its retries, reading the stream.

Failures: 429, 5xx, connection errors and timeouts are retried with exponential backoff and
full jitter (a `Retry-After` header wins, capped by `max_backoff`); any other 4xx fails at once
with the server's message. Tool-call arguments that are not a JSON object also fail the turn
with a non-retryable `ModelError`: guessing at what a malformed call meant could write the
wrong file, and the builder fails the build with a clear reason instead.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from appforge.services.builder.models.base import (
    TOOL_SCHEMAS,
    Exchange,
    ModelError,
    TextSink,
    ToolRequest,
    ToolResult,
    Turn,
)
from appforge.services.builder.models.openai_stream import (
    TurnAssembler,
    clip_error,
    error_text,
    parse_sse_line,
)
from appforge.services.common.logging import get_logger
from appforge.services.common.retry import backoff_delay

log = get_logger(__name__)

SYSTEM_PROMPT: Final = (
    "You build small static web apps. Use the tools to write exactly three files: index.html "
    "(the page, which links styles.css and app.js), styles.css and app.js, all plain HTML, CSS "
    "and JavaScript with no external dependencies. Paths are relative to the app's root. Say "
    "briefly what you are about to do before each batch of tool calls, check the files with "
    "list_files, and when the app is complete answer with a short summary and no tool calls."
)

# Besides every 5xx; 408 and 409 as the official OpenAI clients do.
_RETRYABLE_STATUSES: Final = frozenset({408, 409, 429})


@dataclass(frozen=True, kw_only=True)
class OpenAIConfig:
    """Where the endpoint is and how hard to try: `base_url` ends in `/v1`."""

    base_url: str
    api_key: str = field(repr=False)
    model: str
    timeout: float = 60.0
    max_attempts: int = 4
    initial_backoff: float = 0.5
    max_backoff: float = 8.0

    @property
    def completions_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A `Retry-After` header as seconds from now (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


# --- the request -----------------------------------------------------------------------


def _tool_message(request: ToolRequest, result: ToolResult | None) -> dict[str, Any]:
    if result is None:
        payload: Mapping[str, Any] = {"error": "the tool call got no result"}
    elif result.ok:
        payload = result.output or {}
    else:
        payload = {"error": result.error or "the tool call failed"}
    return {"role": "tool", "tool_call_id": request.call_id, "content": json.dumps(payload)}


def _assistant_message(turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(dict(call.arguments))},
            }
            for call in turn.tool_calls
        ]
    return message


def build_messages(prompt: str, history: Sequence[Exchange]) -> list[dict[str, Any]]:
    """The chat messages for the next turn.

    Tool messages follow the order of the calls (the API wants one answer per call id right
    after the assistant message); a call without a result is answered with an error.
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": prompt},
    ]
    for exchange in history:
        messages.append(_assistant_message(exchange.turn))
        results = {result.call_id: result for result in exchange.results}
        messages.extend(
            _tool_message(call, results.get(call.call_id)) for call in exchange.turn.tool_calls
        )
    return messages


def _bodyerror_text(body: str) -> str:
    """The server's message from an error response body (`{"error": {"message": ...}}`)."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        return clip_error(body.strip()) or "no error message"
    if isinstance(payload, Mapping) and "error" in payload:
        return error_text(payload["error"])
    return clip_error(body.strip())


# --- the model -------------------------------------------------------------------------


class _Retry(Exception):
    """An attempt failed in a way worth retrying; `delay` overrides the backoff when set."""

    def __init__(self, error: ModelError, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


class OpenAIModel:
    """A model served by an OpenAI-compatible chat-completions endpoint, streamed.

    One `aiohttp.ClientSession` per instance, opened on first use; call `close()` when done.
    `next_turn`'s `on_text` receives each content delta as it streams in. Once some text has
    been handed to it, a broken stream is not retried (the text would be repeated): the
    `ModelError` is raised with `retryable=True` and the caller decides.
    """

    name: Final = "openai"

    def __init__(
        self,
        config: OpenAIConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._uniform = uniform
        self._session: aiohttp.ClientSession | None = None

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn:
        body = {
            "model": self.config.model,
            "stream": True,
            "messages": build_messages(prompt, history),
            "tools": list(TOOL_SCHEMAS),
            "tool_choice": "auto",
        }
        attempts = max(1, self.config.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                return await self._attempt(body, on_text)
            except _Retry as retry:
                if attempt >= attempts:
                    raise ModelError(
                        f"gave up after {attempts} attempts: {retry.error}",
                        retryable=True,
                        status=retry.error.status,
                    ) from retry.error
                delay = self._delay(attempt, retry.delay)
                log.warning(
                    "model_request_retry",
                    model=self.name,
                    attempt=attempt,
                    delay=round(delay, 3),
                    error=str(retry.error),
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.config.max_backoff, retry_after)
        return backoff_delay(
            attempt,
            initial=self.config.initial_backoff,
            maximum=self.config.max_backoff,
            uniform=self._uniform,
        )

    def _session_for_call(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.config.api_key}"}
            )
        return self._session

    async def _attempt(self, body: Mapping[str, Any], on_text: TextSink | None) -> Turn:
        """One request; raises `_Retry` for what is worth retrying, `ModelError` otherwise."""
        session = self._session_for_call()
        assembler = TurnAssembler()
        try:
            async with session.post(
                self.config.completions_url,
                json=body,
                headers={"Accept": "text/event-stream"},
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as response:
                await _check_status(response)
                await _read_stream(response, assembler, on_text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = ModelError(f"request failed: {_describe(exc)}", retryable=True)
            raise error if assembler.streamed else _Retry(error) from exc
        except ModelError as exc:
            if exc.retryable and not assembler.streamed:
                raise _Retry(exc) from exc
            raise
        if not assembler.complete:
            error = ModelError("the stream ended before the completion did", retryable=True)
            raise error if assembler.streamed else _Retry(error)
        return assembler.turn()

    async def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_stream(
    response: aiohttp.ClientResponse, assembler: TurnAssembler, on_text: TextSink | None
) -> None:
    """Feed the SSE lines to `assembler`, handing each content delta to `on_text` at once."""
    async for line in _lines(response.content):
        payload = parse_sse_line(line)
        if payload is None:
            assembler.done = True
            return
        text = assembler.add_chunk(payload)
        if text and on_text is not None:
            assembler.streamed = True
            await on_text(text)


async def _check_status(response: aiohttp.ClientResponse) -> None:
    """Raise for a non-200 answer: `_Retry` when retrying may help, `ModelError` otherwise."""
    if response.status == 200:
        return
    message = _bodyerror_text(await response.text(errors="replace"))
    text = f"the endpoint answered HTTP {response.status}: {message}"
    if response.status >= 500 or response.status in _RETRYABLE_STATUSES:
        error = ModelError(text, retryable=True, status=response.status)
        raise _Retry(error, retry_after_seconds(response.headers.get("Retry-After")))
    raise ModelError(text, retryable=False, status=response.status)


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The lines of a response body, however long: aiohttp's own line reader caps them."""
    pending = b""
    async for data in stream.iter_any():
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8").rstrip("\r")
    if pending:
        yield pending.decode("utf-8").rstrip("\r")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
