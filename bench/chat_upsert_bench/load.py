"""The load: every execution's script sent with `concurrency` calls in flight, the calls
of one execution one at a time and in order, many executions interleaved."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import grpc

from appforge.api.chat.v1 import chat_pb2

from .script import Request, Script

OPEN_EXECUTIONS_PER_WORKER = 4

UpsertCall: TypeAlias = "Callable[[Request], Awaitable[chat_pb2.ChatMessage]]"


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """What the client saw while driving one server."""

    calls: int
    ok: int
    errors: dict[str, int]
    first_error: str
    elapsed_s: float
    latencies_s: list[float]


async def drive(upsert: UpsertCall, scripts: Sequence[Script], concurrency: int) -> LoadResult:
    """Send every script's requests with `concurrency` calls in flight.

    An execution's calls go one at a time, in order. Executions open in index order and
    at most `OPEN_EXECUTIONS_PER_WORKER * concurrency` are open at once; a worker takes the
    least recently served open execution, so calls of many executions interleave.
    """
    window = OPEN_EXECUTIONS_PER_WORKER * concurrency
    ready: deque[tuple[int, int]] = deque()  # (execution, position of its next call)
    opened = 0
    in_flight = 0
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    first_error = ""

    def take() -> tuple[int, int] | None:
        nonlocal opened
        while opened < len(scripts) and len(ready) + in_flight < window:
            ready.append((opened, 0))
            opened += 1
        return ready.popleft() if ready else None

    async def worker() -> None:
        nonlocal in_flight, first_error
        while (job := take()) is not None:
            execution, position = job
            in_flight += 1
            started = time.perf_counter()
            try:
                await upsert(scripts[execution][position])
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                first_error = first_error or f"{exc.code().name}: {exc.details()}"
            finally:
                in_flight -= 1
            if position + 1 < len(scripts[execution]):
                ready.append((execution, position + 1))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    total = sum(len(s) for s in scripts)
    return LoadResult(
        calls=total,
        ok=len(latencies),
        errors=dict(errors),
        first_error=first_error,
        elapsed_s=elapsed,
        latencies_s=latencies,
    )
