"""A loopback server that speaks OpenAI's streaming chat-completions format.

The fake endpoint answers each request with the next scripted reply: a stream of chunks, an
HTTP error, or silence. It records every request so tests can check what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from appforge.services.builder.models.base import LIST_FILES, WRITE_FILE
from appforge.services.builder.models.templates import CALCULATOR


@dataclass(frozen=True, kw_only=True)
class Stream:
    """A 200 answer: these chunks as SSE events, then `data: [DONE]`.

    With `hold_after`, the answer stops after that many chunks (the endpoint's `held` is
    set) until the test sets `resume`; `cut`, it then ends without finishing instead.
    """

    chunks: Sequence[dict[str, Any]]
    hold_after: int | None = None
    cut: bool = False


@dataclass(frozen=True, kw_only=True)
class Failure:
    """An HTTP error answer."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Silence:
    """Accept the request and never answer (until the server stops)."""


Reply = Stream | Failure | Silence


@dataclass(frozen=True, kw_only=True)
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(kw_only=True)
class FakeEndpoint:
    """A scripted OpenAI-compatible endpoint on loopback."""

    replies: list[Reply]
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once a request is being answered with silence.
    silent: asyncio.Event = field(default_factory=asyncio.Event)
    # Set while a Stream with `hold_after` waits for `resume`.
    held: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(headers=dict(request.headers), body=await request.json()))
        reply = self.replies.pop(0)
        if isinstance(reply, Failure):
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
        if isinstance(reply, Silence):
            self.silent.set()
            await self.release.wait()
            return web.Response(status=500, text="released")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n, chunk in enumerate(reply.chunks):
            if n == reply.hold_after:
                self.held.set()
                await self.resume.wait()
                if reply.cut:
                    return response  # the body ends here, the completion unfinished
            event = f"data: {json.dumps(chunk)}\n\n".encode()
            # Split every event over two writes so lines straddle reads on the client.
            middle = len(event) // 2
            await response.write(event[:middle])
            await response.write(event[middle:])
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serving(fake: FakeEndpoint) -> AsyncIterator[FakeEndpoint]:
    """Serve `fake` on a free loopback port (its base_url set) until the block ends."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.base_url = f"http://{host}:{port}/v1"
    try:
        yield fake
    finally:
        fake.release.set()
        fake.resume.set()
        await runner.cleanup()


# --- chunk builders ----------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def text_chunks(text: str, parts: int = 3) -> list[dict[str, Any]]:
    pieces = split(text, parts)
    first = [chunk({"role": "assistant", "content": pieces[0]})]
    return first + [chunk({"content": piece}) for piece in pieces[1:]]


def call_chunks(
    index: int, call_id: str, name: str, arguments: dict[str, Any], parts: int = 5
) -> list[dict[str, Any]]:
    """A tool call the way OpenAI streams it: id and name first, then argument fragments."""
    head = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    rest = [
        {"index": index, "function": {"arguments": piece}}
        for piece in split(json.dumps(arguments), parts)
    ]
    return [chunk({"tool_calls": [head]})] + [chunk({"tool_calls": [delta]}) for delta in rest]


def finish(reason: str) -> dict[str, Any]:
    return chunk({}, finish_reason=reason)


PLAN = "I'll build a calculator. First the page and its styles."
LOGIC = "Now the logic in app.js, then a look at the files."
SUMMARY = "Your calculator is ready."
INDEX_ARGS = {"path": "index.html", "content": CALCULATOR.index_html}
STYLES_ARGS = {"path": "styles.css", "content": CALCULATOR.styles_css}
APP_ARGS = {"path": "app.js", "content": CALCULATOR.app_js}


def calculator_replies() -> list[Reply]:
    return [
        Stream(
            chunks=[
                *text_chunks(PLAN),
                *call_chunks(0, "call_a", WRITE_FILE, INDEX_ARGS),
                *call_chunks(1, "call_b", WRITE_FILE, STYLES_ARGS),
                finish("tool_calls"),
            ]
        ),
        Stream(
            chunks=[
                *text_chunks(LOGIC),
                *call_chunks(0, "call_c", WRITE_FILE, APP_ARGS),
                *call_chunks(1, "call_d", LIST_FILES, {}, parts=1),
                finish("tool_calls"),
            ]
        ),
        Stream(chunks=[*text_chunks(SUMMARY, parts=2), finish("stop")]),
    ]
