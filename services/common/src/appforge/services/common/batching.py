"""Concurrent writes coalesced into batches (group commit at the application's edge).

A `WriteBatcher` runs at most `in_flight` batches at once, each of at most `max_size`
writes. A write that finds a free slot goes at once, alone: under light load nothing waits
and nothing changes. Writes that arrive while every slot is busy queue up and leave
together when a slot frees, so the busier the process, the larger its batches and the
fewer its round trips and commits.

Writes that share a key (an execution) keep their order: they never run in two batches at
once, and within a batch they keep the order they arrived in. A write whose caller has gone
(its future cancelled) before its batch leaves is not sent.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar, Union

A = TypeVar("A")
R = TypeVar("R")

# What a batch runner returns for each write, in the order it was given them: the write's
# result, or the exception its caller gets.
Outcome: TypeAlias = Union[R, BaseException]  # noqa: UP007 (a generic alias)


@dataclass
class _Pending(Generic[A, R]):
    arg: A
    key: str
    future: asyncio.Future[R] = field(repr=False)


class WriteBatcher(Generic[A, R]):
    """`submit(arg)` returns what `run` gave for `arg`, `run` being called with batches.

    `run(args)` returns one outcome per arg, in order; if it raises, every write of the
    batch gets that exception.
    """

    def __init__(
        self,
        run: Callable[[Sequence[A]], Awaitable[Sequence[Outcome[R]]]],
        *,
        key: Callable[[A], str],
        in_flight: int,
        max_size: int,
    ) -> None:
        if in_flight < 1 or max_size < 1:
            raise ValueError("in_flight and max_size must be at least 1")
        self._run = run
        self._key = key
        self.in_flight = in_flight
        self.max_size = max_size
        self._queue: deque[_Pending[A, R]] = deque()
        self._busy: Counter[str] = Counter()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Writes queued for a slot."""
        return len(self._queue)

    async def submit(self, arg: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(arg, self._key(arg), future))
        self._dispatch()
        return await future

    async def drain(self) -> None:
        """Wait until no batch runs (queued writes are sent first)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _dispatch(self) -> None:
        while len(self._running) < self.in_flight:
            batch = self._take()
            if not batch:
                return
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Pending[A, R]]:
        """The next batch: queued writes in order, skipping (and keeping in place) those
        whose key is in a batch already running."""
        batch: list[_Pending[A, R]] = []
        kept: deque[_Pending[A, R]] = deque()
        while self._queue and len(batch) < self.max_size:
            pending = self._queue.popleft()
            if pending.future.done():
                continue  # its caller is gone: not written
            if self._busy[pending.key]:
                kept.append(pending)
            else:
                batch.append(pending)
        self._queue.extendleft(reversed(kept))
        for pending in batch:
            self._busy[pending.key] += 1
        return batch

    async def _send(self, batch: list[_Pending[A, R]]) -> None:
        try:
            outcomes: Sequence[Outcome[R]] = await self._run([p.arg for p in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except Exception as exc:  # every caller of the batch gets it
            outcomes = [exc] * len(batch)
        except BaseException:  # the batch itself was cancelled: so are its callers
            self._release(batch)
            for pending in batch:
                pending.future.cancel()
            raise
        self._release(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        self._dispatch()

    def _release(self, batch: list[_Pending[A, R]]) -> None:
        """The batch's slot and keys are free again (before its callers are answered, so
        the next batch can leave at once)."""
        task = asyncio.current_task()
        if task is not None:
            self._running.discard(task)
        for pending in batch:
            self._busy[pending.key] -= 1
            if not self._busy[pending.key]:
                del self._busy[pending.key]
