"""The measured execution: its calls sent one at a time, each timed, CPU sampled around
the first and the last window of calls and once the watcher has caught up."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from harness import CALL_TIMEOUT_S

from appforge.api.chat.v1 import chat_pb2

from .calls import Request
from .cpu import Probe, Sample, memory_mb
from .watcher import Watcher


@dataclass(frozen=True, kw_only=True)
class Growth:
    """What the calls of the measured execution cost, call by call."""

    latencies_s: list[float | None]  # by call, None where the call failed
    reply_bytes: list[int]  # by call, 0 where the call failed
    errors: dict[str, int]
    first_error: str
    elapsed_s: float
    last_reply: chat_pb2.ChatMessage
    samples: dict[str, Sample]  # "start", "early", "late_start", "end", "caught_up"
    watched: dict[str, Any]  # the watcher's summary (see `Tally.summary`)
    memory_mb: dict[str, dict[str, float]]  # chat before the calls and after; the watcher


def _marks(items: int, window: int) -> dict[int, list[str]]:
    """The samples to take once this many calls are done."""
    marks: dict[int, list[str]] = {}
    for name, done in (
        ("start", 0),
        ("early", min(window, items)),
        ("late_start", max(0, items - window)),
        ("end", items),
    ):
        marks.setdefault(done, []).append(name)
    return marks


async def send_calls(
    stub: Any, requests: Sequence[Request], *, window: int, probe: Probe, watcher: Watcher
) -> Growth:
    """Send `requests` in order, one at a time; then wait for the watcher to hold the
    message at the last reply's version."""
    marks = _marks(len(requests), window)
    samples: dict[str, Sample] = {}
    latencies: list[float | None] = []
    reply_bytes: list[int] = []
    errors: Counter[str] = Counter()
    first_error = ""
    last_reply = chat_pb2.ChatMessage()
    chat_before = memory_mb(probe.chat_pid)
    started = time.perf_counter()
    for n, request in enumerate(requests):
        for name in marks.get(n, ()):
            samples[name] = await probe.sample()
        sent = time.perf_counter()
        try:
            reply = await stub.UpsertAssistantMessage(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            latencies.append(None)
            reply_bytes.append(0)
            errors[exc.code().name] += 1
            first_error = first_error or f"{exc.code().name}: {exc.details()}"
            continue
        latencies.append(time.perf_counter() - sent)
        reply_bytes.append(reply.ByteSize())
        last_reply = reply
    elapsed = time.perf_counter() - started
    for name in marks.get(len(requests), ()):
        samples[name] = await probe.sample()
    watched = await watcher.expect(last_reply.id, last_reply.version)
    samples["caught_up"] = await probe.sample()
    memory = {
        "chat_before": chat_before,
        "chat_after": memory_mb(probe.chat_pid),
        "watcher": memory_mb(watcher.pid),
    }
    return Growth(
        latencies_s=latencies,
        reply_bytes=reply_bytes,
        errors=dict(errors),
        first_error=first_error,
        elapsed_s=elapsed,
        last_reply=last_reply,
        samples=samples,
        watched=watched,
        memory_mb=memory,
    )
