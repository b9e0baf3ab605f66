"""The fake OpenAI-compatible model of the token bench: it streams each build's reply one
token per SSE chunk, at `tokens_per_s`, each token a word that says when it was emitted.

A build has two turns. Turn 0 answers at once with one `write_file` of index.html and no
text, so the build has a page to deploy and its tool work is done before any token flows.
Turn 1 is the reply: `tokens` tokens, then `finish_reason: stop`. The replies start
together: each turn 1 waits until the bench calls `start` (once every build has asked for
it, `arrived`), so no build's start-up or tool work overlaps the measured stream. Token k
of build n is due at start + (n / builds + k) / tokens_per_s: the builds are staggered
within one token interval, as independent streams would be. The pace comes from
`builder_bench.load.Pacer` (no burst of more than 20 ms to catch up when the endpoint is
late: the emitted rate then says so). The stream's end is held until `release`, so the
builds' completion and deploy (the work after the reply) fall outside the measured window;
the builder writes held text on its flush timer meanwhile, as it does mid-reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import web
from builder_bench.latency import now_us
from builder_bench.load import Pacer
from builder_bench.model import PROMPT_NUMBER, serve_completions, sse_chunk
from builder_bench.script import turn_calls

from .config import StreamConfig
from .tokens import SEPARATOR, token_word

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"
START_DELAY_S = 0.02  # between `start` and the first token due


def write_index_reply() -> bytes:
    """Turn 0: one write_file of index.html, no text."""
    [(call_id, name, arguments)] = turn_calls(0, 1)
    call = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    first = sse_chunk({"role": "assistant", "content": None, "tool_calls": [call]})
    return first + sse_chunk({}, "tool_calls") + DONE


class TokenEndpoint:
    """The endpoint, and what it emitted: per build number, the tokens and when."""

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self.write_index = write_index_reply()
        self.arrived = asyncio.Event()  # every build asked for its reply
        self.waiting = 0
        self.release = asyncio.Event()  # the replies may end
        self._go = asyncio.Event()
        self._start_s = 0.0
        self.emitted: Counter[int] = Counter()
        self.first_emit_us = 0
        self.last_emit_us = 0
        self.base_url = ""
        self._closing = False

    @property
    def total_emitted(self) -> int:
        return sum(self.emitted.values())

    def start(self) -> None:
        """Let the replies stream, their first tokens due START_DELAY_S from now."""
        self._start_s = time.monotonic() + START_DELAY_S
        self._go.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # The builder sends the whole conversation: one assistant message per turn done.
        turn = body.count(b'"role": "assistant"')
        found = PROMPT_NUMBER.search(body)
        if turn == 0 or found is None:
            return web.Response(body=self.write_index, headers=SSE_HEADERS)
        return await self._stream_reply(request, int(found.group(1)))

    async def _stream_reply(self, request: web.Request, build: int) -> web.StreamResponse:
        self.waiting += 1
        if self.waiting >= self.config.builds:
            self.arrived.set()
        await self._go.wait()
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        rate = self.config.tokens_per_s
        pacer = Pacer(rate)
        pacer.next = self._start_s + (build % self.config.builds) / (self.config.builds * rate)
        for k in range(self.config.tokens):
            if self._closing:
                break
            await pacer.wait(1)
            emitted = now_us()
            delta: dict[str, str] = {"content": token_word(emitted) + SEPARATOR}
            if k == 0:
                delta["role"] = "assistant"
            await response.write(sse_chunk(delta))
            self.emitted[build] += 1
            self.first_emit_us = self.first_emit_us or emitted
            self.last_emit_us = max(self.last_emit_us, emitted)
        await self.release.wait()
        await response.write(sse_chunk({}, "stop") + DONE)
        await response.write_eof()
        return response

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[TokenEndpoint]:
        async with serve_completions(self.handle) as self.base_url:
            try:
                yield self
            finally:  # replies still streaming end, so that the server can stop
                self._closing = True
                self.release.set()
                self._go.set()
