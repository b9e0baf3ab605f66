"""The load: the pacer, what a phase's load saw, and the Build calls of the builder phase."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from appforge.api.builder.v1 import builder_pb2
from appforge.api.flow.v1 import flow_pb2

from .config import BenchConfig
from .latency import Histogram, now_us, stamp_us

BUILD_TIMEOUT_S = 300.0
PACER_CREDIT_S = 0.02  # how far behind schedule the pacer may catch up, at most


class Pacer:
    """Hands out slots so that about `rate` items per second go out; no burst to catch up
    beyond PACER_CREDIT_S (when the system falls behind, the achieved rate says so)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next = 0.0

    async def wait(self, items: int) -> None:
        now = time.monotonic()
        slot = max(self.next, now - PACER_CREDIT_S)
        self.next = slot + items / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(kw_only=True)
class Window:
    """The measured window of a phase, in wall-clock microseconds (0: not yet)."""

    start_us: int = 0
    end_us: int = 0

    def holds(self, us: int) -> bool:
        return self.start_us > 0 and us >= self.start_us and (self.end_us == 0 or us < self.end_us)


@dataclass(kw_only=True)
class Tally:
    """Items produced and streamed during one phase, as the bench saw them."""

    window: Window
    seen: set[tuple[str, int]] = field(default_factory=set)
    produced: Counter[str] = field(default_factory=Counter)  # new items stamped in window, by app
    new_total: int = 0  # new items, in or out of the window (for progress)
    item_events: int = 0  # BuildEvent.item received in the window
    new_events: int = 0  # ...of which the first for their (execution_id, seq)
    upserts: int = 0  # baseline: UpsertAssistantMessage calls sent in the window
    stream_latency: Histogram = field(default_factory=Histogram)  # stamp -> Build client
    started: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""

    def build_item(self, app_id: str, item: flow_pb2.FlowItem, received: int) -> None:
        counted = self.window.holds(received)
        self.item_events += counted
        key = (item.execution_id, item.seq)
        if key in self.seen:
            return
        self.seen.add(key)
        self.new_total += 1
        self.new_events += counted
        stamp = stamp_us(item)
        if self.window.holds(stamp):
            self.produced[app_id] += 1
            self.stream_latency.add(received - stamp)

    def wrote_item(self, app_id: str, stamp: int) -> None:
        self.new_total += 1
        if self.window.holds(stamp):
            self.produced[app_id] += 1

    def error(self, text: str) -> None:
        self.errors[text.split(":", 1)[0]] += 1
        self.first_error = self.first_error or text


@dataclass(kw_only=True)
class Phase:
    """What a phase's load needs: where to send, which apps, when to stop."""

    config: BenchConfig
    apps: list[str]
    tally: Tally
    pacer: Pacer
    stopping: bool = False
    counter: int = 0
    running: dict[int, str] = field(default_factory=dict)  # worker -> its execution

    def next_build(self) -> tuple[int, str]:
        n = self.counter
        self.counter += 1
        return n, self.apps[n % len(self.apps)]


# --- the builder load ---------------------------------------------------------------------


async def build_worker(stub: Any, phase: Phase, worker: int) -> None:
    """Build after Build, one at a time, until the phase stops."""
    tally = phase.tally
    while not phase.stopping:
        n, app_id = phase.next_build()
        request = builder_pb2.BuildRequest(
            app_id=app_id, prompt=f"bench build {n}: a small static page", model="openai"
        )
        try:
            async for event in stub.Build(request, timeout=BUILD_TIMEOUT_S):
                kind = event.WhichOneof("event")
                if kind == "item":
                    tally.build_item(app_id, event.item, now_us())
                elif kind == "started":
                    tally.started += 1
                    phase.running[worker] = event.started.execution_id
                elif kind == "finished":
                    phase.running.pop(worker, None)
                    status = builder_pb2.ExecutionStatus.Name(event.finished.status)
                    tally.statuses[status] += 1
                    if event.finished.error:
                        tally.error(f"{status}: {event.finished.error}")
        except grpc.aio.AioRpcError as exc:
            tally.error(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.1)
