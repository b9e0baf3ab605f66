"""The builds: one Build call per app, all in flight at once, and what their streams carried.

The Build stream gets each piece of streamed text right after chat acknowledged it (the
builder writes to chat first), so token emitted -> Build client is the builder's part of
the latency (the flush wait, its upsert to chat) without chat's fan-out to the watchers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from builder_bench.latency import Histogram, now_us

from appforge.api.builder.v1 import builder_pb2

from .config import StreamConfig
from .tokens import TextTokens

BUILD_TIMEOUT_S = 300.0  # on top of the reply's streaming time


@dataclass(kw_only=True)
class BuildTally:
    """What the bench's Build streams saw, all builds together."""

    latency: Histogram = field(default_factory=Histogram)  # token emitted -> Build client
    texts: TextTokens = field(default_factory=TextTokens)
    tokens: int = 0
    pieces: int = 0  # text items on the streams: each one the builder's upsert to chat
    started: int = 0
    running: set[int] = field(default_factory=set)  # build numbers not finished yet
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""

    def error(self, text: str) -> None:
        self.errors[text.split(":", 1)[0]] += 1
        self.first_error = self.first_error or text

    def text_item(self, item: Any) -> None:
        """A piece of streamed text: its tokens' latencies."""
        received = now_us()
        self.pieces += 1
        part = item.message
        for _, latency in self.texts.feed(
            item.execution_id, item.seq, part.offset, part.text, received
        ):
            self.latency.add(latency)
            self.tokens += 1


def prompt(build: int) -> str:
    """What build number `build` asks for (the endpoint reads the number back)."""
    return f"token bench build {build}: a page, then a long reply"


async def run_build(
    stub: Any, build: int, app_id: str, tally: BuildTally, config: StreamConfig
) -> None:
    """One Build call, read to its `finished` event (or its error)."""
    request = builder_pb2.BuildRequest(app_id=app_id, prompt=prompt(build), model="openai")
    tally.running.add(build)
    try:
        call = stub.Build(request, timeout=config.stream_s + BUILD_TIMEOUT_S)
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "item" and event.item.WhichOneof("body") == "message":
                tally.text_item(event.item)
            elif kind == "started":
                tally.started += 1
            elif kind == "finished":
                status = builder_pb2.ExecutionStatus.Name(event.finished.status)
                tally.statuses[status.removeprefix("EXECUTION_STATUS_")] += 1
                if event.finished.error:
                    tally.error(f"{status}: {event.finished.error}")
    except grpc.aio.AioRpcError as exc:
        tally.error(f"{exc.code().name}: {exc.details()}")
    finally:
        tally.running.discard(build)


def start_builds(
    stub: Any, apps: list[str], tally: BuildTally, config: StreamConfig
) -> list[asyncio.Task[None]]:
    """Build number n on apps[n], all at once."""
    return [
        asyncio.create_task(run_build(stub, n, app_id, tally, config))
        for n, app_id in enumerate(apps)
    ]
