"""Benchmark: flow items through the builder, and how soon they reach 100 WatchApp watchers.

What is measured, in one run, with the same services, apps and watchers throughout:

1. **builder** - `appforge serve builder` with the `openai` model pointed at a fake
   OpenAI-compatible endpoint that this script serves on loopback. The endpoint answers
   every turn at once with a short text and `--calls-per-turn` cheap tool calls
   (`write_file` of a small file, `list_files`, `read_file`), and ends each build with a
   text-only turn. Builds are 2 to 2 x `--turns` - 2 turns long, `--turns` on average (the
   length of build n is drawn from a generator seeded with n, so both phases get the same
   lengths, and builds do not all end at once). The endpoint is also the pacer:
   it releases turns so that about `--rate` new flow items per second are produced (a turn
   with tools makes two new items, its text and its tool batch; the last turn makes one).
   `--builds` Build calls are in flight; a finished build is replaced at once. Every build
   ends with a real Deploy to `appforge serve deployer` (local target).
2. **baseline** - no builder: the bench writes the same chat traffic itself with
   `ChatService.UpsertAssistantMessage` (and `PostUserMessage`), upsert for upsert what the
   builder sends for a build: the user message, the PROCESSING message, per turn the text
   and the PENDING batch in one upsert, then STREAMING and SUCCEEDED per call, the
   completion, the final notice and the deployer's "deployed" notice. Same pacing, same
   number of executions in flight, same apps, same watchers.

Throughout, `--watchers` `ChatService.WatchApp` streams (spread evenly over `--apps` apps,
the apps the builds are spread over) run in `--watcher-procs` separate processes (this
script with `--watch-child`). For every watcher and every flow item (execution_id, seq)
the watcher records the wall-clock time it first receives a MessageEvent whose message
holds the item, minus the item's `FlowItem.timestamp` (stamped by the builder from the wall
clock before it allocates the item; stamped by the bench just before the upsert in the
baseline). The percentiles are over every (watcher, item) pair of the items stamped in the
measured window.

Printed for each phase: offered and achieved new items/s; for the builder the items the
Build streams carry per second (every `BuildEvent.item`, new items - distinct
(execution_id, seq) - and tool-call state updates); stamp -> watcher latency p50/p90/p99/
p99.9/max, also per item for the last watcher to get it; whether every watcher saw every
item; how often chat's change events reached Redis out of cursor order (each such event
sends every watcher of the app to the database to catch up); CPU per process (chat,
builder, deployer, PostgreSQL, Redis, this bench, the watcher processes, and what else ran
on the machine) and how busy the event-loop threads were; Build streams that never said
`finished` although their execution had ended (given up on 5 s after its end, reported).
Then the builder/baseline ratios and the target: builder p99 <= 10 ms with the offered
rate sustained (>= 95%) and no item missed by any watcher.

Everything shares the machine: on 2 cores the watchers' own CPU competes with the services,
and the CPU table says how much. The bench creates its own database
(`appforge_bench_<random>`, dropped at the end), starts and stops its own processes (by pid)
and waits for readiness with a bound.

Run it from the repository root, in the project's virtualenv, with PostgreSQL and Redis up:

    python bench/builder.py                        # the default run, under two minutes
    python bench/builder.py --rate 300 --json      # another offered rate, machine-readable
    python bench/builder.py --apps 1 --check       # 100 watchers on one app; exit 3 on MISS

The exit status is 1 when the bench cannot measure and, with `--check`, 3 when the target
is missed.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis
from aiohttp import web
from harness import (
    CALL_TIMEOUT_S,
    CHANNEL_OPTIONS,
    MIGRATE_TIMEOUT_S,
    BenchError,
    Child,
    PySpy,
    appforge_command,
    bench_database,
    free_port,
    in_workdir,
    log,
    machine_ticks,
    py_spy_command,
    run_and_report,
    run_command,
    running,
    summarise_collapsed,
)

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.common import keys

TARGET_P99_MS = 10.0
RATE_SUSTAINED = 0.95  # the offered rate counts as sustained at this share or more
BIN_US = 10  # latency histogram resolution
BUILD_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0
STUCK_AFTER_S = 5.0  # a Build stream not finished this long after its execution ended
REPORT_TIMEOUT_S = 120.0
QUIET_S = 1.0  # after a phase drained, before the next one starts
PACER_CREDIT_S = 0.02  # how far behind schedule the pacer may catch up, at most
LAG_TICK_S = 0.01  # the watcher processes' event-loop lag probe
PROGRESS_S = 5.0
OTHER_LOAD_WARNING = 0.2  # cores of other work on the machine worth a note in the report
STREAMS_PER_CHANNEL = 25  # WatchApp streams per gRPC connection in a watcher process

TOOL_CALL_TIMEOUT_US = 60_000_000  # the builder's default APPFORGE_TOOL_TIMEOUT
INDEX_HTML = (
    '<!doctype html><html><head><meta charset="utf-8"><title>Bench page</title>'
    '<link rel="stylesheet" href="styles.css"></head><body><main id="app">'
    "<h1>Bench page</h1><p>Built step by step.</p></main>"
    '<script type="module" src="src/part1.js"></script></body></html>'
)
FINAL_TEXT = "The page is ready: index.html and one script per step. Open it to try it."

DEPLOYS_PENDING_SQL = """
SELECT (SELECT count(*) FROM deploy_deployments WHERE NOT (status = ANY($1::smallint[])))
     + (SELECT count(*) FROM deploy_outbox WHERE delivered_us IS NULL)
"""
TERMINAL = [
    deployer_pb2.DEPLOYMENT_STATUS_SUCCEEDED,
    deployer_pb2.DEPLOYMENT_STATUS_FAILED,
    deployer_pb2.DEPLOYMENT_STATUS_TIMED_OUT,
    deployer_pb2.DEPLOYMENT_STATUS_CANCELLED,
]


def now_us() -> int:
    return time.time_ns() // 1000


def stamp_us(item: flow_pb2.FlowItem) -> int:
    ts = item.timestamp
    return ts.seconds * 1_000_000 + ts.nanos // 1000


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line."""

    rate: float
    duration: float
    warmup: float
    watchers: int
    apps: int
    builds: int
    turns: int
    calls_per_turn: int
    watcher_procs: int
    admin_dsn: str
    redis_url: str
    py_spy: Path | None
    log_level: str
    logs: Path | None

    @property
    def items_per_build(self) -> int:
        """On average: two per turn with tools, one for the last turn."""
        return 2 * (self.turns - 1) + 1

    @property
    def max_turns(self) -> int:
        return max(2, 2 * self.turns - 2)


def build_turns(n: int, config: BenchConfig) -> int:
    """How many turns build number `n` of a phase has: 2 to `max_turns`, `turns` on average."""
    return random.Random(n).randint(2, config.max_turns)


# --- latency histograms -------------------------------------------------------------------


class Histogram:
    """Durations in BIN_US-wide bins: mergeable across processes, percentiles per bin."""

    def __init__(self) -> None:
        self.bins: Counter[int] = Counter()
        self.count = 0
        self.max_us = 0

    def add(self, us: int) -> None:
        us = max(0, us)
        self.bins[us // BIN_US] += 1
        self.count += 1
        self.max_us = max(self.max_us, us)

    def to_json(self) -> dict[str, Any]:
        return {"bins": {str(k): v for k, v in self.bins.items()}, "max_us": self.max_us}

    def merge_json(self, data: dict[str, Any]) -> None:
        for key, value in data["bins"].items():
            self.bins[int(key)] += int(value)
            self.count += int(value)
        self.max_us = max(self.max_us, int(data["max_us"]))

    def percentile_ms(self, fraction: float) -> float:
        """The nearest-rank percentile, as the upper edge of its bin (never optimistic)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return min((key + 1) * BIN_US, self.max_us) / 1000
        return self.max_us / 1000

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_ms": self.percentile_ms(0.50),
            "p90_ms": self.percentile_ms(0.90),
            "p99_ms": self.percentile_ms(0.99),
            "p999_ms": self.percentile_ms(0.999),
            "max_ms": self.max_us / 1000,
        }


# --- the watcher processes (this script with --watch-child) ------------------------------


class WatchState:
    """What one watcher process saw: every (watcher, item) first arrival, every event."""

    def __init__(self, apps: Sequence[str], first: int) -> None:
        self.apps = list(apps)
        self.first = first
        self.item_ids: dict[tuple[str, int], int] = {}
        self.item_keys: list[str] = []
        self.item_stamps = array.array("q")
        self.s_item = array.array("q")
        self.s_watcher = array.array("i")
        self.s_latency = array.array("q")
        self.event_times = array.array("q")
        self.lag_times = array.array("q")
        self.lags = array.array("q")
        self.highest: list[dict[str, int]] = [{} for _ in apps]
        self.ready = [False] * len(apps)
        self.ready_count = 0
        self.all_ready = asyncio.Event()
        self.errors = 0
        self.first_error = ""

    def on_event(self, watcher: int, event: chat_pb2.MessageEvent, received: int) -> None:
        self.event_times.append(received)
        if not self.ready[watcher]:
            self.ready[watcher] = True
            self.ready_count += 1
            if self.ready_count == len(self.apps):
                self.all_ready.set()
        message = event.message
        flow = message.flow
        if not flow:
            return
        execution_id = message.execution_id
        highest = self.highest[watcher]
        high = top = highest.get(execution_id, 0)
        for item in reversed(flow):  # the flow is in seq order: new items come last
            seq = item.seq
            if seq <= high:
                break
            top = max(top, seq)
            key = (execution_id, seq)
            index = self.item_ids.get(key)
            stamp = stamp_us(item)
            if index is None:
                index = self.item_ids[key] = len(self.item_stamps)
                self.item_stamps.append(stamp)
                self.item_keys.append(f"{execution_id}:{seq}")
            self.s_item.append(index)
            self.s_watcher.append(watcher)
            self.s_latency.append(received - stamp)
        highest[execution_id] = top

    def window(self, name: str, start: int, end: int) -> dict[str, Any]:
        """Everything about the items stamped in [start, end), as JSON-able data."""
        stamps = self.item_stamps
        inside = bytearray(1 if start <= s < end else 0 for s in stamps)
        latency = Histogram()
        per_item: dict[int, list[int]] = {}
        per_watcher = [0] * len(self.apps)
        for index, watcher, lat in zip(self.s_item, self.s_watcher, self.s_latency, strict=True):
            if not inside[index]:
                continue
            latency.add(lat)
            per_watcher[watcher] += 1
            known = per_item.get(index)
            if known is None:
                per_item[index] = [lat, lat, 1]
            else:
                known[0] = min(known[0], lat)
                known[1] = max(known[1], lat)
                known[2] += 1
        lag = Histogram()
        for at, value in zip(self.lag_times, self.lags, strict=True):
            if start <= at < end:
                lag.add(value)
        return {
            "name": name,
            "latency": latency.to_json(),
            "per_item": {self.item_keys[i]: v for i, v in per_item.items()},
            "per_watcher": {str(self.first + w): n for w, n in enumerate(per_watcher)},
            "watcher_apps": {str(self.first + w): a for w, a in enumerate(self.apps)},
            "events": sum(1 for t in self.event_times if start <= t < end),
            "lag": lag.to_json(),
            "errors": self.errors,
            "first_error": self.first_error,
        }


async def _watch_one(
    stub: Any, state: WatchState, watcher: int, app_id: str, closing: asyncio.Event
) -> None:
    after = 0
    while not closing.is_set():
        try:
            call = stub.WatchApp(chat_pb2.WatchAppRequest(app_id=app_id, after_cursor=after))
            async for event in call:
                state.on_event(watcher, event, now_us())
                after = event.cursor
        except grpc.aio.AioRpcError as exc:
            if closing.is_set():
                return
            state.errors += 1
            state.first_error = state.first_error or f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.1)


async def _probe_lag(state: WatchState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_TICK_S)
        late = loop.time() - before - LAG_TICK_S
        state.lag_times.append(now_us())
        state.lags.append(max(0, round(late * 1_000_000)))


async def watch_child(chat_address: str, apps: Sequence[str], first: int) -> None:
    """A watcher process: `apps[i]` is watcher i's app. Talks JSON lines on stdin/stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    state = WatchState(apps, first)
    closing = asyncio.Event()
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(chat_address, options=options)
        for _ in range(max(1, math.ceil(len(apps) / STREAMS_PER_CHANNEL)))
    ]
    stubs = [chat_pb2_grpc.ChatServiceStub(channel) for channel in channels]
    tasks = [
        asyncio.create_task(_watch_one(stubs[w % len(stubs)], state, w, app, closing))
        for w, app in enumerate(apps)
    ]
    tasks.append(asyncio.create_task(_probe_lag(state)))
    try:
        await asyncio.wait_for(state.all_ready.wait(), READY_TIMEOUT_S)
        _reply({"ready": len(apps)})
        while line := await reader.readline():
            command = json.loads(line)
            if command["cmd"] == "report":
                windows = [state.window(*w) for w in command["windows"]]
                _reply({"windows": windows})
            elif command["cmd"] == "exit":
                break
    finally:
        closing.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close(None)


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


class WatcherPool:
    """The watcher processes, seen from the bench: started, ready, asked, stopped."""

    def __init__(self, chat_address: str, apps: Sequence[str], procs: int, workdir: Path) -> None:
        self.chat_address = chat_address
        self.apps = list(apps)
        self.procs = max(1, min(procs, len(apps)))
        self.workdir = workdir
        self.children: list[asyncio.subprocess.Process] = []

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    async def start(self) -> None:
        per = math.ceil(len(self.apps) / self.procs)
        for n, first in enumerate(range(0, len(self.apps), per)):
            with (self.workdir / f"watchers-{n}.log").open("ab") as err:
                child = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(Path(__file__).resolve()),
                    *("--watch-child", "--chat", self.chat_address, "--first", str(first)),
                    *("--watch-apps", ",".join(self.apps[first : first + per])),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    limit=1 << 28,
                )
            self.children.append(child)
        for n, child in enumerate(self.children):
            reply = await self._read(child, READY_TIMEOUT_S + 10)
            if "ready" not in reply:
                raise BenchError(f"watcher process {n} did not get ready: {reply}")

    async def _read(self, child: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
        assert child.stdout is not None
        try:
            line = await asyncio.wait_for(child.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"watcher process {child.pid} silent for {timeout:.0f}s") from None
        if not line:
            tail = self.log_tail()
            raise BenchError(f"watcher process {child.pid} exited ({child.returncode}):\n{tail}")
        result: dict[str, Any] = json.loads(line)
        return result

    def log_tail(self) -> str:
        lines: list[str] = []
        for path in sorted(self.workdir.glob("watchers-*.log")):
            lines += path.read_text(errors="replace").splitlines()[-15:]
        return "\n".join(lines)

    def check_alive(self) -> None:
        for child in self.children:
            if child.returncode is not None:
                raise BenchError(f"watcher process {child.pid} exited:\n{self.log_tail()}")

    async def report(self, windows: Sequence[tuple[str, int, int]]) -> list[list[dict[str, Any]]]:
        """For each process, its per-window data."""
        command = json.dumps({"cmd": "report", "windows": list(windows)}).encode() + b"\n"
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(command)
            await child.stdin.drain()
        replies = [await self._read(child, REPORT_TIMEOUT_S) for child in self.children]
        return [reply["windows"] for reply in replies]

    async def stop(self) -> None:
        for child in self.children:
            if child.returncode is None and child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.write(b'{"cmd": "exit"}\n')
                    child.stdin.close()
        for child in self.children:
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()


# --- pacing and the fake model ------------------------------------------------------------


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


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


PROMPT_NUMBER = re.compile(rb"bench build (\d+):")


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


def turn_reply(turn: int, calls: int) -> bytes:
    """The SSE answer of a turn with tools: its text, then each call in one delta."""
    parts = [_chunk({"role": "assistant", "content": turn_text(turn)})]
    for index, (call_id, name, arguments) in enumerate(turn_calls(turn, calls)):
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        parts.append(_chunk({"tool_calls": [call]}))
    parts.append(_chunk({}, "tool_calls"))
    return b"".join(parts) + b"data: [DONE]\n\n"


def final_reply() -> bytes:
    return (
        _chunk({"role": "assistant", "content": FINAL_TEXT})
        + _chunk({}, "stop")
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
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"
        try:
            yield self
        finally:
            await runner.cleanup()


# --- what the load saw --------------------------------------------------------------------


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


# --- the baseline load --------------------------------------------------------------------


def _call(
    call_id: str,
    name: str,
    status: int,
    *,
    arguments: str = "",
    result: str = "",
    deadline: int = 0,
) -> flow_pb2.ToolCall:
    call = flow_pb2.ToolCall(
        call_id=call_id,
        name=name,
        status=status,  # type: ignore[arg-type]
        arguments_json=arguments,
        result_json=result,
    )
    if deadline:
        call.deadline.FromMicroseconds(deadline)
    return call


def _tools(seq: int, stamp: int, calls: Sequence[flow_pb2.ToolCall]) -> flow_pb2.FlowItem:
    item = flow_pb2.FlowItem(seq=seq, tools=flow_pb2.ToolBatch(calls=list(calls)))
    item.timestamp.FromMicroseconds(stamp)
    return item


def _text(seq: int, stamp: int, text: str) -> flow_pb2.FlowItem:
    item = flow_pb2.FlowItem(seq=seq, message=flow_pb2.TextPart(text=text))
    item.timestamp.FromMicroseconds(stamp)
    return item


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


class Emulator:
    """One build's chat traffic, written directly: what the builder would send, in order."""

    def __init__(self, stub: Any, phase: Phase, token: str) -> None:
        self.stub = stub
        self.phase = phase
        self.token = token

    async def upsert(self, app_id: str, execution_id: str, **fields: Any) -> None:
        request = chat_pb2.UpsertAssistantMessageRequest(
            app_id=app_id, execution_id=execution_id, **fields
        )
        self.phase.tally.upserts += self.phase.tally.window.holds(now_us())
        await self.stub.UpsertAssistantMessage(request, timeout=CALL_TIMEOUT_S)

    async def build(self, n: int, app_id: str) -> None:
        execution_id = f"bench-{self.token}-{n:06d}"
        await self.stub.PostUserMessage(
            chat_pb2.PostUserMessageRequest(
                app_id=app_id, content=f"bench build {n}: a small static page"
            ),
            timeout=CALL_TIMEOUT_S,
        )
        await self.upsert(
            app_id,
            execution_id,
            status=chat_pb2.MESSAGE_STATUS_PROCESSING,
            metadata={"execution_status": "running", "model": "openai"},
        )
        batches: list[flow_pb2.FlowItem] = []
        config = self.phase.config
        turns = build_turns(n, config)
        for turn in range(turns):
            if turn == turns - 1 or (self.phase.stopping and turn > 0):
                await self.phase.pacer.wait(1)
                stamp = now_us()
                await self.upsert(
                    app_id, execution_id, items=[_text(2 * turn + 1, stamp, FINAL_TEXT)]
                )
                self.phase.tally.wrote_item(app_id, stamp)
                break
            await self.phase.pacer.wait(2)
            batches.append(await self.turn(app_id, execution_id, turn))
        version = f"version-{execution_id}"
        await self.upsert(
            app_id,
            execution_id,
            status=chat_pb2.MESSAGE_STATUS_COMPLETED,
            metadata={"app_version_id": version, "deployment_status": "deploying"},
        )
        await self.upsert(
            app_id,
            execution_id,
            items=batches,
            status=chat_pb2.MESSAGE_STATUS_COMPLETED,
            metadata={
                "execution_status": "succeeded",
                "app_version_id": version,
                "deployment_id": f"deployment-{execution_id}",
            },
        )
        await self.upsert(
            app_id,
            execution_id,
            metadata={
                "deployment_id": f"deployment-{execution_id}",
                "deployment_status": "deployed",
                "url": f"http://127.0.0.1/apps/{app_id}/",
            },
        )

    async def turn(self, app_id: str, execution_id: str, turn: int) -> flow_pb2.FlowItem:
        """A turn with tools: text + PENDING batch, then each call's STREAMING and end."""
        stamp = now_us()
        seq = 2 * turn + 1
        calls = turn_calls(turn, self.phase.config.calls_per_turn)
        deadline = stamp + TOOL_CALL_TIMEOUT_US
        pending = [
            _call(c, name, flow_pb2.TOOL_STATUS_PENDING, arguments=json.dumps(a), deadline=deadline)
            for c, name, a in calls
        ]
        items = [_text(seq, stamp, turn_text(turn)), _tools(seq + 1, stamp + 1, pending)]
        await self.upsert(app_id, execution_id, items=items)
        self.phase.tally.wrote_item(app_id, stamp)
        self.phase.tally.wrote_item(app_id, stamp + 1)

        async def run(call_id: str, name: str, arguments: dict[str, Any]) -> flow_pb2.ToolCall:
            streaming = _call(call_id, name, flow_pb2.TOOL_STATUS_STREAMING)
            await self.upsert(app_id, execution_id, items=[_tools(seq + 1, stamp + 1, [streaming])])
            done = _call(
                call_id,
                name,
                flow_pb2.TOOL_STATUS_SUCCEEDED,
                result=tool_result(turn, name, arguments),
            )
            await self.upsert(app_id, execution_id, items=[_tools(seq + 1, stamp + 1, [done])])
            done.arguments_json = json.dumps(arguments)
            done.deadline.FromMicroseconds(deadline)
            return done

        ended = await asyncio.gather(*(run(*c) for c in calls))
        return _tools(seq + 1, stamp + 1, ended)


async def emulate_worker(emulator: Emulator, phase: Phase, worker: int) -> None:
    """Emulated build after emulated build, one at a time, until the phase stops."""
    while not phase.stopping:
        n, app_id = phase.next_build()
        phase.tally.started += 1
        try:
            await emulator.build(n, app_id)
            phase.tally.statuses["EXECUTION_STATUS_SUCCEEDED"] += 1
        except grpc.aio.AioRpcError as exc:
            phase.tally.statuses["EXECUTION_STATUS_FAILED"] += 1
            phase.tally.error(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.1)


# --- CPU accounting -----------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds used so far by each process of interest, and the machine's ticks."""

    processes: dict[str, float]
    threads: dict[str, float]
    machine: list[int]
    wall_s: float


def _stat_fields(path: Path) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of a /proc stat file."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    return raw[raw.find("(") + 1 : raw.rfind(")")], raw[raw.rfind(")") + 2 :].split()


def _cpu_s(fields: list[str], *, children: bool = False) -> float:
    """utime + stime (and, with `children`, the CPU of the children it reaped)."""
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def _pid_cpu_s(path: str) -> float:
    found = _stat_fields(Path(path))
    return _cpu_s(found[1]) if found else 0.0


def _postgres_cpu_s(postmaster: int | None, database: str) -> float:
    """The bench database's share of PostgreSQL: the postmaster, its auxiliary processes
    (WAL writer, checkpointer...) and the backends connected to `database`; not the
    backends of other databases (the server may be shared). A backend that exited during
    the window is not counted. Without a postmaster pid: every `postgres` process."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _stat_fields(stat)
        if found is None:
            continue
        command, fields = found
        pid = int(stat.parent.name)
        if postmaster is None:
            total += _cpu_s(fields) if command == "postgres" else 0.0
        elif pid == postmaster:
            total += _cpu_s(fields)
        elif int(fields[1]) == postmaster:
            try:
                title = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            backend = "(" in title  # "postgres: user database host(port) state"
            if not backend or f" {database} " in title:
                total += _cpu_s(fields)
    return total


def cpu_sample(
    pids: dict[str, list[int]], servers: dict[str, int | None], database: str
) -> CpuSample:
    """`pids`: label -> its pids (the watchers may be several processes); `servers`:
    PostgreSQL's postmaster and Redis's pid, when known; `database`: the bench's."""
    processes = {
        label: sum(_pid_cpu_s(f"/proc/{pid}/stat") for pid in group)
        for label, group in pids.items()
    }
    threads = {
        label: sum(_pid_cpu_s(f"/proc/{pid}/task/{pid}/stat") for pid in group)
        for label, group in pids.items()
    }
    processes["postgres"] = _postgres_cpu_s(servers.get("postgres"), database)
    redis = servers.get("redis")
    processes["redis"] = _pid_cpu_s(f"/proc/{redis}/stat") if redis else 0.0
    return CpuSample(
        processes=processes, threads=threads, machine=machine_ticks(), wall_s=time.monotonic()
    )


def cpu_usage(before: CpuSample, after: CpuSample) -> dict[str, Any]:
    """Cores used per process, main-thread (event loop) busy share, the machine's shares;
    `other`: the busy cores nobody listed accounts for (other work on the machine)."""
    wall = max(1e-6, after.wall_s - before.wall_s)
    user, nice, system, idle, iowait, irq, softirq, steal = (
        b - a for a, b in zip(before.machine, after.machine, strict=True)
    )
    total = max(1, user + nice + system + idle + iowait + irq + softirq + steal)
    busy = (user + nice + system + irq + softirq) / total
    cores = {k: (after.processes[k] - before.processes[k]) / wall for k in after.processes}
    cores["other"] = max(0.0, busy * (os.cpu_count() or 1) - sum(cores.values()))
    return {
        "cores": cores,
        "loop_busy": {k: (after.threads[k] - before.threads[k]) / wall for k in after.threads},
        "machine": {"busy": busy, "iowait": iowait / total, "steal": steal / total},
    }


async def server_pids(conn: asyncpg.Connection, redis_url: str) -> dict[str, int | None]:
    """The postmaster of the bench's PostgreSQL and the pid of its Redis, if they are
    processes of this machine (not, say, in a container with its own pid namespace)."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    found = _stat_fields(Path(f"/proc/{backend}/stat"))
    postmaster = int(found[1][1]) if found and found[0] == "postgres" else None
    client = aioredis.Redis.from_url(redis_url)
    try:
        pid = int((await client.info("server"))["process_id"])
    finally:
        await client.aclose()
    found = _stat_fields(Path(f"/proc/{pid}/stat"))
    return {
        "postgres": postmaster,
        "redis": pid if found and found[0].startswith("redis-server") else None,
    }


# --- the change bus ----------------------------------------------------------------------


class BusMonitor:
    """Listens to the apps' change channels on Redis the way chat's WatchApp does.

    WatchApp forwards a live event only when its cursor is exactly one past the last one
    sent; on any other (a gap: a later change published before an earlier one) it reads
    the app's changes from the database instead. Every watcher of the app does that read.
    This counts the events that arrive with a gap and the stale ones behind them, and
    estimates the catch-up reads (gaps x watchers of the app; exact when each catch-up
    reaches just the cursor that revealed the gap).
    """

    def __init__(self, redis_url: str, watchers_per_app: Counter[str]) -> None:
        self.redis_url = redis_url
        self.watchers_per_app = watchers_per_app
        self.channels = {keys.app_changes_channel(a): a for a in watchers_per_app}
        self.last: dict[str, int] = {}
        self.counts: Counter[str] = Counter()

    def on_payload(self, app_id: str, payload: bytes) -> None:
        cursor = chat_pb2.MessageEvent.FromString(payload).cursor
        last = self.last.get(app_id)
        self.counts["events"] += 1
        if last is None or cursor == last + 1:
            self.last[app_id] = cursor
        elif cursor <= last:
            self.counts["stale"] += 1
        else:
            self.counts["gaps"] += 1
            self.counts["catch_ups"] += self.watchers_per_app[app_id]
            self.last[app_id] = cursor

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[BusMonitor]:
        client = aioredis.Redis.from_url(self.redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(*self.channels)

        async def read() -> None:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    channel = message["channel"]
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    self.on_payload(self.channels[name], message["data"])

        reader = asyncio.create_task(read())
        try:
            yield self
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()


# --- one phase ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Services:
    """The running processes and the bench's connections to them."""

    children: dict[str, Child]
    watchers: WatcherPool
    chat: Any
    builder: Any
    conn: asyncpg.Connection
    fake: FakeModel
    servers: dict[str, int | None]
    database: str
    bus: BusMonitor

    def cpu(self) -> CpuSample:
        return cpu_sample(self.pids(), self.servers, self.database)

    def pids(self) -> dict[str, list[int]]:
        out = {name: [c.pid] for name, c in self.children.items() if c.pid is not None}
        out["bench"] = [os.getpid()]
        out["watchers"] = self.watchers.pids
        return out

    def check_alive(self) -> None:
        for child in self.children.values():
            if child.proc is not None and child.proc.returncode is not None:
                raise BenchError(f"{child.name} exited with {child.proc.returncode}")
        self.watchers.check_alive()


@dataclass(kw_only=True)
class PhaseRun:
    """A finished phase: its window, its tally, the CPU it used, what the bus saw."""

    name: str
    window: Window
    tally: Tally
    cpu: dict[str, Any]
    bus: dict[str, int]
    builds_started: int
    stuck: list[str]


async def _sleep_watching(services: Services, seconds: float, tally: Tally, name: str) -> None:
    """Sleep, checking the processes are alive and logging the produced rate."""
    deadline = time.monotonic() + seconds
    mark, mark_t = tally.new_total, time.monotonic()
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, PROGRESS_S))
        services.check_alive()
        now = time.monotonic()
        if now - mark_t >= 1:
            ended = sum(tally.statuses.values())
            log(
                f"{name}: {(tally.new_total - mark) / (now - mark_t):.0f} new items/s, "
                f"{ended} executions ended, {sum(tally.errors.values())} errors"
            )
            mark, mark_t = tally.new_total, now


async def describe_execution(services: Services, execution_id: str) -> tuple[bool, str]:
    """Whether the execution ended in the builder's store more than STUCK_AFTER_S ago, and
    what the builder and chat say about it."""
    try:
        execution = await services.builder.GetExecution(
            builder_pb2.GetExecutionRequest(execution_id=execution_id), timeout=10
        )
        message = await services.chat.GetMessageByExecution(
            chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        return False, f"{execution_id}: {exc.code().name} {exc.details()}"
    calls = Counter(flow_pb2.ToolStatus.Name(c.status) for c in execution.tool_calls)
    ended_us = execution.finished_at.ToMicroseconds() if execution.HasField("finished_at") else 0
    ended = ended_us > 0 and now_us() - ended_us > STUCK_AFTER_S * 1_000_000
    age = f"{(now_us() - ended_us) / 1e6:.0f}s ago" if ended_us else "not ended"
    return ended, (
        f"{execution_id}: {builder_pb2.ExecutionStatus.Name(execution.status)} ({age}), "
        f"last_seq {execution.last_seq}, calls {dict(calls)}, error {execution.error!r}; "
        f"chat message {chat_pb2.MessageStatus.Name(message.status)} with "
        f"{len(message.flow)} items"
    )


async def drain(name: str, services: Services, phase: Phase, workers: list[Any]) -> list[str]:
    """Wait for the executions in flight to end; the Build streams given up on.

    A Build stream whose execution ended in the builder's store more than STUCK_AFTER_S
    ago without the stream saying `finished` will not say it any more: it is cancelled and
    reported (what the service did), not counted as the bench failing. Anything else still
    running DRAIN_TIMEOUT_S after the stop fails the bench.
    """
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    stuck: list[str] = []
    pending = set(workers)
    while pending:
        done, pending = await asyncio.wait(pending, timeout=STUCK_AFTER_S)
        for task in done:
            if not task.cancelled():
                task.result()
        for worker, execution_id in list(phase.running.items()):
            ended, description = await describe_execution(services, execution_id)
            if ended and workers[worker] in pending:
                log(f"{name}: Build stream never finished: {description}")
                stuck.append(description)
                phase.running.pop(worker, None)
                workers[worker].cancel()
        if pending and time.monotonic() > deadline:
            described = [(await describe_execution(services, e))[1] for e in phase.running.values()]
            raise BenchError(
                f"{name}: {len(pending)} executions did not end {DRAIN_TIMEOUT_S:.0f}s after "
                "the phase:\n  " + "\n  ".join(described or ["(no execution id known)"])
            )
    return stuck


async def _drain_deploys(conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while await conn.fetchval(DEPLOYS_PENDING_SQL, TERMINAL):
        if time.monotonic() > deadline:
            raise BenchError(f"deployments still pending {DRAIN_TIMEOUT_S:.0f}s after the phase")
        await asyncio.sleep(0.1)


async def measure_window(
    name: str, services: Services, config: BenchConfig, tally: Tally
) -> tuple[dict[str, Any], dict[str, int]]:
    """The measured window: its CPU use and what the change bus carried (and, with
    --py-spy, a profile of chat and of the builder during the builder's window)."""
    spies = []
    if config.py_spy is not None and name == "builder":
        for label in ("chat", "builder"):
            pid = services.children[label].pid
            if pid is not None:
                spies.append(PySpy(config.py_spy / f"{label}.txt", pid))
                await spies[-1].start()
    try:
        bus_before = Counter(services.bus.counts)
        before = services.cpu()
        tally.window.start_us = now_us()
        await _sleep_watching(services, config.duration, tally, name)
        tally.window.end_us = now_us()
        after = services.cpu()
        bus = Counter(services.bus.counts)
        bus.subtract(bus_before)
    finally:
        for spy in spies:
            await spy.stop()
    return cpu_usage(before, after), dict(bus)


async def run_phase(
    name: str,
    services: Services,
    config: BenchConfig,
    apps: list[str],
    worker: Callable[[Phase, int], Awaitable[None]],
) -> PhaseRun:
    """Warm up, measure `config.duration` seconds, then stop and drain."""
    window = Window()
    tally = Tally(window=window)
    phase = Phase(config=config, apps=apps, tally=tally, pacer=Pacer(config.rate))
    services.fake.pacer = phase.pacer
    services.fake.stopping = False
    log(f"{name}: {config.builds} executions in flight, warming up for {config.warmup:g}s")
    workers = [asyncio.create_task(worker(phase, n)) for n in range(config.builds)]
    try:
        await _sleep_watching(services, config.warmup, tally, name)
        cpu, bus = await measure_window(name, services, config, tally)
        started = tally.started
        phase.stopping = services.fake.stopping = True
        log(f"{name}: measured; letting the executions in flight end")
        stuck = await drain(name, services, phase, workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        services.fake.pacer = None
    await _drain_deploys(services.conn)
    await asyncio.sleep(QUIET_S)
    return PhaseRun(
        name=name,
        window=window,
        tally=tally,
        cpu=cpu,
        bus=bus,
        builds_started=started,
        stuck=stuck,
    )


# --- summaries ----------------------------------------------------------------------------


def merge_watchers(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One window's data from every watcher process, merged."""
    latency, lag = Histogram(), Histogram()
    per_item: dict[str, list[int]] = {}
    per_watcher: dict[str, int] = {}
    apps: dict[str, str] = {}
    events = errors = 0
    first_error = ""
    for part in parts:
        latency.merge_json(part["latency"])
        lag.merge_json(part["lag"])
        for key, (low, high, count) in part["per_item"].items():
            known = per_item.setdefault(key, [low, high, 0])
            known[0], known[1] = min(known[0], low), max(known[1], high)
            known[2] += count
        per_watcher.update(part["per_watcher"])
        apps.update(part["watcher_apps"])
        events += part["events"]
        errors += part["errors"]
        first_error = first_error or part["first_error"]
    first, last = Histogram(), Histogram()
    for low, high, _ in per_item.values():
        first.add(low)
        last.add(high)
    return {
        "latency": latency,
        "first": first,
        "last": last,
        "lag": lag,
        "per_watcher": per_watcher,
        "watcher_apps": apps,
        "events": events,
        "errors": errors,
        "first_error": first_error,
    }


def summarise(run: PhaseRun, watched: dict[str, Any], config: BenchConfig) -> dict[str, Any]:
    tally = run.tally
    seconds = max(1e-6, (run.window.end_us - run.window.start_us) / 1e6)
    produced = sum(tally.produced.values())
    missing = 0
    incomplete = 0
    for watcher, app_id in watched["watcher_apps"].items():
        lack = tally.produced[app_id] - watched["per_watcher"].get(watcher, 0)
        missing += max(0, lack)
        incomplete += lack > 0
    return {
        "window_s": seconds,
        "offered_items_per_s": config.rate,
        "achieved_items_per_s": produced / seconds,
        "new_items": produced,
        "build_item_events_per_s": tally.item_events / seconds,
        "build_new_items_per_s": tally.new_events / seconds,
        "build_updates_per_s": (tally.item_events - tally.new_events) / seconds,
        "upserts_per_s": tally.upserts / seconds,
        "executions_started": run.builds_started,
        "stuck_build_streams": run.stuck,
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
        "first_error": tally.first_error,
        "latency": watched["latency"].summary(),
        "first_watcher": watched["first"].summary(),
        "last_watcher": watched["last"].summary(),
        "build_stream": tally.stream_latency.summary(),
        "watchers": {
            "events_per_s": watched["events"] / seconds,
            "samples": watched["latency"].count,
            "expected_samples": sum(tally.produced[a] for a in watched["watcher_apps"].values()),
            "missing": missing,
            "incomplete_watchers": incomplete,
            "stream_errors": watched["errors"],
            "first_error": watched["first_error"],
            "loop_lag": watched["lag"].summary(),
        },
        "bus": {
            "events_per_s": run.bus.get("events", 0) / seconds,
            "gaps": run.bus.get("gaps", 0),
            "stale": run.bus.get("stale", 0),
            "catch_ups_estimated": run.bus.get("catch_ups", 0),
        },
        "cpu": run.cpu,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def report(config: BenchConfig, builder: dict[str, Any], baseline: dict[str, Any]) -> dict:
    """The results as plain data (what `--json` prints)."""
    b, base = builder["latency"], baseline["latency"]
    sustained = builder["achieved_items_per_s"] >= RATE_SUSTAINED * config.rate
    complete = builder["watchers"]["missing"] == 0
    met = b["count"] > 0 and b["p99_ms"] <= TARGET_P99_MS and sustained and complete
    return {
        "config": {
            **{
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(config).items()
                if k != "admin_dsn"
            },
            "items_per_build": config.items_per_build,
            "cpus": os.cpu_count(),
        },
        "builder": builder,
        "baseline": baseline,
        "ratios": {
            "p50": _ratio(b["p50_ms"], base["p50_ms"]),
            "p99": _ratio(b["p99_ms"], base["p99_ms"]),
            "throughput": _ratio(builder["achieved_items_per_s"], baseline["achieved_items_per_s"]),
        },
        "target": {
            "p99_ms": TARGET_P99_MS,
            "value_ms": b["p99_ms"],
            "rate_sustained": sustained,
            "every_item_seen": complete,
            "pass": met,
        },
    }


# --- the human-readable report ------------------------------------------------------------


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _latency_row(label: str, s: dict[str, float]) -> str:
    return (
        f"  {label:30}{s['p50_ms']:8.2f}{s['p90_ms']:8.2f}{s['p99_ms']:8.2f}"
        f"{s['p999_ms']:9.2f}{s['max_ms']:9.1f}{s['count']:>11,}"
    )


def _cpu_rows(phases: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    labels = ["chat", "builder", "deployer", "postgres", "redis", "bench", "watchers", "other"]
    lines = [
        "CPU in the window, in cores (1.00 = one core busy; other: the rest of the machine)",
        f"  {'':10}" + "".join(f"{k:>9}" for k in labels) + f"{'machine':>9}",
    ]
    for name, p in phases:
        cores = p["cpu"]["cores"]
        row = "".join(f"{cores.get(k, 0.0):9.2f}" for k in labels)
        lines.append(f"  {name:10}{row}{100 * p['cpu']['machine']['busy']:8.0f}%")
    lines.append("  event-loop (main) thread busy:")
    for name, p in phases:
        busy = p["cpu"]["loop_busy"]
        shown = ", ".join(
            f"{k} {100 * busy[k]:.0f}%" for k in ("chat", "builder", "watchers") if k in busy
        )
        lines.append(f"  {name:12}{shown}")
    return lines


def render_table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    phases = [("builder", result["builder"]), ("baseline", result["baseline"])]
    lines = [
        f"builder: {cfg['watchers']} WatchApp watchers on {cfg['apps']} app(s) in "
        f"{cfg['watcher_procs']} process(es), offered {cfg['rate']:,.0f} new flow items/s,",
        f"{cfg['builds']} executions in flight ({cfg['turns']} turns x {cfg['calls_per_turn']} "
        f"tool calls, {cfg['items_per_build']} new items per build on average), "
        f"{cfg['duration']:g}s measured "
        f"per phase after {cfg['warmup']:g}s warm-up, {cfg['cpus']} CPUs",
        "",
        f"{'':14}{'offered':>9}{'achieved':>10}   items/s; Build streams: all / new / updates",
    ]
    for name, p in phases:
        extra = (
            f"{p['build_item_events_per_s']:.0f} / {p['build_new_items_per_s']:.0f} / "
            f"{p['build_updates_per_s']:.0f}"
            if name == "builder"
            else f"(no Build; {p['upserts_per_s']:.0f} upserts/s)"
        )
        lines.append(
            f"{name:14}{p['offered_items_per_s']:9.0f}{p['achieved_items_per_s']:10.0f}   {extra}"
        )
    lines += [
        "",
        f"  {'stamp -> arrival, ms':30}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>9}{'max':>9}"
        f"{'samples':>11}",
    ]
    for name, p in phases:
        lines.append(_latency_row(f"{name}: every watcher", p["latency"]))
        lines.append(_latency_row(f"{name}: last watcher/item", p["last_watcher"]))
    lines.append(_latency_row("builder: Build stream (bench)", result["builder"]["build_stream"]))
    r = result["ratios"]
    lines.append(
        f"  ratio builder/baseline: p50 {_fmt_ratio(r['p50'])}, p99 {_fmt_ratio(r['p99'])}, "
        f"achieved rate {_fmt_ratio(r['throughput'])}"
    )
    lines.append("")
    for name, p in phases:
        w = p["watchers"]
        lines.append(
            f"{name:10}watchers got {w['samples']:,}/{w['expected_samples']:,} (watcher, item) "
            f"firsts, {w['missing']:,} missing; {w['events_per_s']:,.0f} events/s; their "
            f"loop lag p99 {w['loop_lag']['p99_ms']:.1f} ms"
        )
        bus = p["bus"]
        lines.append(
            f"{'':10}bus: {bus['events_per_s']:,.0f} changes/s, {bus['gaps']:,} out of cursor "
            f"order -> ~{bus['catch_ups_estimated']:,} catch-up reads by watchers"
        )
        status = ", ".join(
            f"{k.removeprefix('EXECUTION_STATUS_')} {v}" for k, v in p["statuses"].items()
        )
        lines.append(
            f"{'':10}executions ended in the phase: {status or 'none'}; "
            f"{p['executions_started']} started from the warm-up to the end of the window"
        )
        if p["stuck_build_streams"]:
            lines.append(
                f"{'':10}{len(p['stuck_build_streams'])} Build stream(s) never said finished "
                "although the execution had ended in the builder's store:"
            )
            lines += [f"{'':12}{d}" for d in p["stuck_build_streams"][:3]]
        if p["errors"] or w["stream_errors"]:
            lines.append(
                f"{'':10}errors {p['errors']} {p['first_error']!r}; watch stream errors "
                f"{w['stream_errors']} {w['first_error']!r}"
            )
    lines.append("")
    lines += _cpu_rows(phases)
    shared = max(p["cpu"]["cores"]["other"] for _, p in phases)
    if shared >= OTHER_LOAD_WARNING:
        lines.append(
            f"  NOTE: other work on this machine used up to {shared:.2f} cores during the "
            "windows; the numbers are pessimistic and vary from run to run."
        )
    t = result["target"]
    verdict = "PASS" if t["pass"] else "MISS"
    lines += [
        "",
        f"target: builder stamp -> watcher p99 <= {t['p99_ms']:g} ms at >= "
        f"{100 * RATE_SUSTAINED:.0f}% of {cfg['rate']:,.0f} items/s, every item to every watcher",
        f"  p99 {t['value_ms']:.2f} ms, rate sustained: {'yes' if t['rate_sustained'] else 'no'}, "
        f"every item seen: {'yes' if t['every_item_seen'] else 'no'}  ->  {verdict}",
    ]
    return "\n".join(lines)


# --- orchestration ------------------------------------------------------------------------


def _serve(name: str, port: int, env: dict[str, str], logs: Path, *extra: str) -> Child:
    argv = [*appforge_command(), "serve", name, "--host", "127.0.0.1", "--port", str(port)]
    return Child(name, [*argv, *extra], env, logs / f"{name}.log")


async def create_apps(stub: Any, count: int) -> list[str]:
    """`count` apps, each with one user message (a watcher's first event proves it is on)."""
    token = secrets.token_hex(3)
    apps = []
    for n in range(count):
        app = await stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="bench", name=f"builder-bench-{token}-{n}"),
            timeout=CALL_TIMEOUT_S,
        )
        await stub.PostUserMessage(
            chat_pb2.PostUserMessageRequest(app_id=app.id, content="Hello, bench."),
            timeout=CALL_TIMEOUT_S,
        )
        apps.append(app.id)
    return apps


async def start_services(
    config: BenchConfig, dsn: str, workdir: Path, stack: contextlib.AsyncExitStack
) -> tuple[dict[str, Child], dict[str, str], FakeModel]:
    """chat, deployer, the fake model and the builder, each serving; their addresses."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_URL": config.redis_url,
        "APPFORGE_DATA_DIR": str(workdir / "data"),
        "APPFORGE_LOG_LEVEL": config.log_level,
    }
    logs = config.logs or workdir
    await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
    ports = {name: free_port() for name in ("chat", "builder", "deployer", "http")}
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    chat = _serve("chat", ports["chat"], env, logs)
    await stack.enter_async_context(running(chat, addresses["chat"]))
    deploy_env = {
        **env,
        "APPFORGE_CHAT_ADDR": addresses["chat"],
        "APPFORGE_DEPLOY_ROOT": str(workdir / "deploys"),
        "APPFORGE_DEPLOY_PUBLIC_URL": f"http://{addresses['http']}",
    }
    deployer = _serve(
        "deployer", ports["deployer"], deploy_env, logs, "--http-port", str(ports["http"])
    )
    await stack.enter_async_context(running(deployer, addresses["deployer"]))
    fake = await stack.enter_async_context(FakeModel(config).serving())
    builder_env = {
        **env,
        "APPFORGE_CHAT_ADDR": addresses["chat"],
        "APPFORGE_DEPLOYER_ADDR": addresses["deployer"],
        "APPFORGE_MODEL": "openai",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "x",
        "APPFORGE_OPENAI_MODEL": "bench",
        "APPFORGE_MAX_TURNS": str(config.max_turns + 5),
    }
    builder = _serve("builder", ports["builder"], builder_env, logs)
    await stack.enter_async_context(running(builder, addresses["builder"]))
    return {"chat": chat, "deployer": deployer, "builder": builder}, addresses, fake


async def run_bench(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    async with bench_database(config.admin_dsn) as dsn, contextlib.AsyncExitStack() as stack:
        children, addresses, fake = await start_services(config, dsn, workdir, stack)
        log(", ".join(f"{name} pid {child.pid}" for name, child in children.items()))
        chat_channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(addresses["chat"], options=CHANNEL_OPTIONS)
        )
        builder_channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(addresses["builder"], options=CHANNEL_OPTIONS)
        )
        chat = chat_pb2_grpc.ChatServiceStub(chat_channel)
        builder = builder_pb2_grpc.BuilderServiceStub(builder_channel)
        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)

        apps = await create_apps(chat, config.apps)
        assignment = [apps[w % len(apps)] for w in range(config.watchers)]
        pool = WatcherPool(
            addresses["chat"], assignment, config.watcher_procs, config.logs or workdir
        )
        stack.push_async_callback(pool.stop)
        await pool.start()
        log(f"{config.watchers} watchers on {len(apps)} app(s) ready (pids {pool.pids})")
        bus = await stack.enter_async_context(
            BusMonitor(config.redis_url, Counter(assignment)).listening()
        )
        services = Services(
            children=children,
            watchers=pool,
            chat=chat,
            builder=builder,
            conn=conn,
            fake=fake,
            servers=await server_pids(conn, config.redis_url),
            database=dsn.rpartition("/")[2],
            bus=bus,
        )

        built = await run_phase(
            "builder", services, config, apps, lambda phase, n: build_worker(builder, phase, n)
        )
        emulator_token = secrets.token_hex(3)
        direct = await run_phase(
            "baseline",
            services,
            config,
            apps,
            lambda phase, n: emulate_worker(Emulator(chat, phase, emulator_token), phase, n),
        )
        log("collecting the watchers' records")
        windows = [(run.name, run.window.start_us, run.window.end_us) for run in (built, direct)]
        per_process = await pool.report(windows)
    merged = [merge_watchers([proc[n] for proc in per_process]) for n in range(len(windows))]
    return report(config, summarise(built, merged[0], config), summarise(direct, merged[1], config))


# --- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark flow items through the builder to WatchApp watchers, against "
        "the same chat traffic written directly.",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="offered new flow items/s")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--watchers", type=int, default=100, help="WatchApp streams")
    parser.add_argument("--apps", type=int, default=10, help="apps (builds and watchers spread)")
    parser.add_argument("--builds", type=int, default=32, help="executions in flight")
    parser.add_argument(
        "--turns", type=int, default=10, help="model turns per build, on average (>= 2)"
    )
    parser.add_argument("--calls-per-turn", type=int, default=2, help="tool calls per turn")
    parser.add_argument("--watcher-procs", type=int, default=1, help="processes for the watchers")
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="asyncpg DSN of a database to run CREATE/DROP DATABASE from",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument("--check", action="store_true", help="exit 3 when the target is missed")
    parser.add_argument("--log-level", default="WARNING", help="APPFORGE_LOG_LEVEL of the services")
    parser.add_argument(
        "--logs", type=Path, default=None, metavar="DIR", help="keep the services' logs in DIR"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile chat and the builder during the builder's window into DIR/chat.txt and "
        "DIR/builder.txt (needs py-spy)",
    )
    child = parser.add_argument_group("internal: a watcher process")
    child.add_argument("--watch-child", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--chat", default="", help=argparse.SUPPRESS)
    child.add_argument("--watch-apps", default="", help=argparse.SUPPRESS)
    child.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.watch_child:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch_child(args.chat, args.watch_apps.split(","), args.first))
        return 0
    counts = (args.watchers, args.apps, args.builds, args.calls_per_turn, args.watcher_procs)
    if min(counts) < 1 or args.turns < 2 or args.rate <= 0 or args.duration <= 0:
        print(
            "--watchers, --apps, --builds, --calls-per-turn, --watcher-procs >= 1, --turns >= 2, "
            "--rate and --duration > 0",
            file=sys.stderr,
        )
        return 2
    config = BenchConfig(
        rate=args.rate,
        duration=args.duration,
        warmup=max(0.0, args.warmup),
        watchers=args.watchers,
        apps=args.apps,
        builds=args.builds,
        turns=args.turns,
        calls_per_turn=args.calls_per_turn,
        watcher_procs=args.watcher_procs,
        admin_dsn=args.admin_dsn,
        redis_url=args.redis_url,
        py_spy=args.py_spy,
        log_level=args.log_level.upper(),
        logs=args.logs,
    )
    if config.logs is not None:
        config.logs.mkdir(parents=True, exist_ok=True)
    if config.py_spy is not None:
        if py_spy_command() is None:
            print("--py-spy needs py-spy: pip install py-spy", file=sys.stderr)
            return 2
        config.py_spy.mkdir(parents=True, exist_ok=True)
    result = run_and_report(
        in_workdir("builder-bench-", lambda workdir: run_bench(config, workdir)),
        as_json=args.json,
        render=render_table,
        py_spy=None,
    )
    if isinstance(result, int):
        return result
    for label in ("chat", "builder") if config.py_spy and not args.json else ():
        profile = config.py_spy / f"{label}.txt"
        if profile.exists():
            print(f"\n{label}: {summarise_collapsed(profile)}")
    return 3 if args.check and not result["target"]["pass"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
