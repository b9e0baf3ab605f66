"""The WatchApp watcher: a process of its own (the bench script with `--watch-child`) that
keeps the app's messages whole with `deltas.Messages` and counts the bytes of every event
it receives; and `Watcher`, the bench's handle on it (JSON lines on its stdin and stdout).

A process of its own so that what the watcher does with its events (parsing, applying; a
whole message per event with `--view full`) never delays the timed calls' event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from harness import CHANNEL_OPTIONS, BenchError

from appforge.api.chat.v1 import chat_pb2, deltas

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
WATCH_METHOD = f"/{SERVICE_NAME}/WatchApp"
# BASIC is what a client gets that leaves the view unset; FULL must be asked for.
VIEW_FIELD = {"basic": chat_pb2.MESSAGE_VIEW_UNSPECIFIED, "full": chat_pb2.MESSAGE_VIEW_FULL}
# A FULL event is the whole message, which may pass gRPC's default 4 MiB.
RECEIVE_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.max_receive_message_length", -1)]
READY_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 120.0
REPLY_LIMIT = 1 << 28  # one reply line holds the final message, base64


class Tally:
    """Every event the watcher received: counted as it came off the wire, then applied."""

    def __init__(self) -> None:
        # content=False: applying a delta costs what it carries (the content is built once,
        # for the comparison with GetMessage, in `summary`).
        self.messages = deltas.Messages(content=False)
        self.events = 0
        self.bytes = 0
        self.snapshots = 0
        self.snapshot_bytes = 0
        self.max_event_bytes = 0
        self.errors = 0
        self.first_error = ""
        # Per message: (version after the event, its bytes, ns to parse and apply it).
        self.trace: dict[str, list[tuple[int, int, int]]] = {}
        self.changed = asyncio.Event()

    def on_event(self, raw: bytes) -> int:
        """Count and apply one serialised MessageEvent; its cursor."""
        started = time.perf_counter_ns()
        event = chat_pb2.MessageEvent.FromString(raw)
        try:
            message = self.messages.apply(event)
        except deltas.DeltaMismatch as exc:
            self.error(f"DeltaMismatch: {exc}")
            return event.cursor
        took = time.perf_counter_ns() - started
        size = len(raw)
        self.events += 1
        self.bytes += size
        self.max_event_bytes = max(self.max_event_bytes, size)
        if event.WhichOneof("change") == "message":
            self.snapshots += 1
            self.snapshot_bytes += size
        self.trace.setdefault(message.id, []).append((message.version, size, took))
        self.changed.set()
        return event.cursor

    def error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text

    def version_of(self, message_id: str) -> int:
        message = self.messages.by_id.get(message_id)
        return message.version if message is not None else 0

    async def until_version(self, message_id: str, version: int, timeout: float) -> bool:
        """Whether the watcher holds `message_id` at `version` (or later) within `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.version_of(message_id) < version:
                    self.changed.clear()
                    await self.changed.wait()
        return self.version_of(message_id) >= version

    def summary(self, message_id: str) -> dict[str, Any]:
        """The counts, this message's trace, and the message itself (deterministic bytes)."""
        message = self.messages.by_id.get(message_id)
        whole = b""
        if message is not None:
            shown = chat_pb2.ChatMessage()
            shown.CopyFrom(message)
            shown.content = deltas.content_of(shown)
            whole = shown.SerializeToString(deterministic=True)
        return {
            "events": self.events,
            "bytes": self.bytes,
            "snapshots": self.snapshots,
            "snapshot_bytes": self.snapshot_bytes,
            "max_event_bytes": self.max_event_bytes,
            "errors": self.errors,
            "first_error": self.first_error,
            "version": self.version_of(message_id),
            "trace": self.trace.get(message_id, []),
            "message": base64.b64encode(whole).decode(),
        }


async def _watch(channel: grpc.aio.Channel, app_id: str, view: str, tally: Tally) -> None:
    """Watch `app_id` from the start; after a stream error, resume from the last cursor."""
    watch = channel.unary_stream(
        WATCH_METHOD,
        request_serializer=chat_pb2.WatchAppRequest.SerializeToString,
        response_deserializer=None,  # raw bytes: counted exactly as they came
    )
    after = 0
    while True:
        request = chat_pb2.WatchAppRequest(app_id=app_id, after_cursor=after, view=VIEW_FIELD[view])
        try:
            async for raw in watch(request):
                after = tally.on_event(raw)
        except grpc.aio.AioRpcError as exc:
            tally.error(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.1)


async def watch_child(address: str, app_id: str, view: str) -> None:
    """The watcher process: says `ready` once the stream has shown the app's first message,
    then answers `expect` (wait for a message's version, then report) until `exit`."""
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    tally = Tally()
    async with grpc.aio.insecure_channel(address, options=RECEIVE_OPTIONS) as channel:
        watching = asyncio.create_task(_watch(channel, app_id, view, tally))
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await tally.changed.wait()
            _reply({"ready": True, "events": tally.events})
            while line := await commands.readline():
                command = json.loads(line)
                if command["cmd"] != "expect":
                    break
                message_id, version = command["message_id"], command["version"]
                caught_up = await tally.until_version(message_id, version, command["timeout"])
                _reply({"caught_up": caught_up, **tally.summary(message_id)})
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


class Watcher:
    """The watcher process, seen from the bench: started and ready on entry, asked with
    `expect`, stopped (killed if it must be) on exit. `script` is the bench's entry point,
    which hands `--watch-child` to `watch_child`."""

    def __init__(self, script: Path, address: str, app_id: str, view: str, log: Path) -> None:
        self.argv = [sys.executable, str(script), "--watch-child", "--chat", address]
        self.argv += ["--watch-app", app_id, "--view", view]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def __aenter__(self) -> Watcher:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                limit=REPLY_LIMIT,
            )
        try:
            if "ready" not in await self._read(READY_TIMEOUT_S + 10):
                raise BenchError("the watcher did not get ready")
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stop()

    async def expect(self, message_id: str, version: int) -> dict[str, Any]:
        """What the watcher received, once it holds `message_id` at `version` (or gave up
        after CATCH_UP_TIMEOUT_S: then `caught_up` is false)."""
        assert self.proc is not None and self.proc.stdin is not None
        command = {"cmd": "expect", "message_id": message_id, "version": version}
        command["timeout"] = CATCH_UP_TIMEOUT_S
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read(CATCH_UP_TIMEOUT_S + 30)

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"the watcher was silent for {timeout:.0f}s") from None
        if not line:
            await self.proc.wait()
            raise BenchError(f"the watcher exited ({self.proc.returncode}):\n{self._log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(b'{"cmd": "exit"}\n')
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
