"""The WatchApp watchers: the watcher processes (the bench script with `--watch-child`),
the pool the bench drives them through, and their records merged."""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from harness import CHANNEL_OPTIONS, BenchError

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc

from .latency import Histogram, now_us, stamp_us

READY_TIMEOUT_S = 60.0
REPORT_TIMEOUT_S = 120.0
LAG_TICK_S = 0.01  # the watcher processes' event-loop lag probe
STREAMS_PER_CHANNEL = 25  # WatchApp streams per gRPC connection in a watcher process


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
        # BASIC watchers (the default): a snapshot first, then deltas, whose items are what
        # changed (new items whole, in seq order, after any older item that changed).
        if event.WhichOneof("change") == "delta":
            flow, execution_id = event.delta.items, event.delta.execution_id
        else:
            flow, execution_id = event.message.flow, event.message.execution_id
        if not flow:
            return
        highest = self.highest[watcher]
        high = top = highest.get(execution_id, 0)
        for item in reversed(flow):  # in seq order: new items come last
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


async def watch_child(
    chat_address: str,
    apps: Sequence[str],
    first: int,
    state_of: Callable[[Sequence[str], int], WatchState] = WatchState,
) -> None:
    """A watcher process: `apps[i]` is watcher i's app. Talks JSON lines on stdin/stdout.
    `state_of` makes what records the events (another bench's `WatchState` subclass)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    state = state_of(apps, first)
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
    """The watcher processes, seen from the bench: started, ready, asked, stopped.

    Each is `script --watch-child ...`: `script` is the bench's entry point, which hands
    that mode to `watch_child`.
    """

    def __init__(
        self, script: Path, chat_address: str, apps: Sequence[str], procs: int, workdir: Path
    ) -> None:
        self.script = script
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
                    str(self.script),
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
