"""The fake OpenAI-compatible endpoint the builder talks to: streamed (SSE) chat completions
that answer every turn at once, in the format `tests/openai_endpoint.py` uses."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from .config import BenchConfig
from .load import Pacer
from .script import FINAL_TEXT, build_turns, turn_calls, turn_text


def sse_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


PROMPT_NUMBER = re.compile(rb"bench build (\d+):")


def turn_reply(turn: int, calls: int) -> bytes:
    """The SSE answer of a turn with tools: its text, then each call in one delta."""
    parts = [sse_chunk({"role": "assistant", "content": turn_text(turn)})]
    for index, (call_id, name, arguments) in enumerate(turn_calls(turn, calls)):
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        parts.append(sse_chunk({"tool_calls": [call]}))
    parts.append(sse_chunk({}, "tool_calls"))
    return b"".join(parts) + b"data: [DONE]\n\n"


def final_reply() -> bytes:
    return (
        sse_chunk({"role": "assistant", "content": FINAL_TEXT})
        + sse_chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )


class FakeModel:
    """An OpenAI-compatible streaming endpoint that answers at once, paced by `pacer`.

    The turn number is the number of assistant messages in the request (the builder sends
    the whole conversation each turn), the build's number is in its prompt; no JSON is
    parsed on this side.
    """

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        calls = config.calls_per_turn
        self.replies = [turn_reply(turn, calls) for turn in range(config.max_turns - 1)]
        self.final = final_reply()
        self.pacer: Pacer | None = None
        self.stopping = False
        self.requests = 0
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        turn = body.count(b'"role": "assistant"')
        found = PROMPT_NUMBER.search(body)
        turns = build_turns(int(found.group(1)), self.config) if found else self.config.turns
        # Turn 0 writes index.html: a build stopped early still has a file to deploy.
        final = turn >= turns - 1 or (self.stopping and turn > 0)
        if self.pacer is not None:
            await self.pacer.wait(1 if final else 2)
        reply = self.final if final else self.replies[turn]
        return web.Response(body=reply, headers={"Content-Type": "text/event-stream"})

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeModel]:
        async with serve_completions(self.handle) as self.base_url:
            yield self


@contextlib.asynccontextmanager
async def serve_completions(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """`handle` as POST /v1/chat/completions on a free loopback port; the base URL
    (`http://127.0.0.1:PORT/v1`, OPENAI_BASE_URL) until the block ends."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        await runner.cleanup()
