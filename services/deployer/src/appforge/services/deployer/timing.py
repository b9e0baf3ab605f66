"""Clocks that can be waited on, so deadlines, backoff and polling follow the injected clock.

A worker's every wait is "until this instant of the clock": the attempt's deadline, the
next heartbeat, the end of an idle poll. On the wall clock that is `asyncio.sleep`; on a
`ManualTimer` it is "until the test moves the clock past it", which is what lets tests of
timeouts, retries and lost leases run in milliseconds without racing real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol

from appforge.services.common.clock import Clock, SystemClock
from appforge.services.deployer.domain import US


class Timer(Clock, Protocol):
    """A clock that also waits: `sleep_until` returns once `now_us()` reaches the deadline."""

    async def sleep_until(self, deadline_us: int) -> None: ...


class WallTimer:
    """Any `Clock` (the system clock by default), waited on with `asyncio.sleep`."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()

    def now_us(self) -> int:
        return self._clock.now_us()

    async def sleep_until(self, deadline_us: int) -> None:
        # Re-read after each sleep: the loop's timer may wake early, the wall clock may step.
        while (left := deadline_us - self._clock.now_us()) > 0:
            await asyncio.sleep(left / US)


class ManualTimer:
    """A clock that moves only when told (tests); sleepers wake when it passes their deadline.

    `sleeping()` returns once some coroutine waits on this clock (for a given deadline, if
    asked), so a test can move the clock exactly when there is someone to wake.
    """

    def __init__(self, now_us: int = 1_700_000_000_000_000) -> None:
        self._now_us = now_us
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties wake in the order they went to sleep
        self._went_to_sleep = asyncio.Event()

    def now_us(self) -> int:
        return self._now_us

    @property
    def next_deadline_us(self) -> int | None:
        """The earliest deadline anyone waits for, None when nobody waits."""
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep_until(self, deadline_us: int) -> None:
        if deadline_us <= self._now_us:
            await asyncio.sleep(0)  # a wait that is already over still lets others run
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline_us, next(self._order), waiter))
        self._went_to_sleep.set()
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled: forget it, so it is not counted as sleeping
                waiter.cancel()
            self._forget_done()

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` on and wake everyone whose deadline it reached."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.set(self._now_us + round(seconds * US))

    def set(self, now_us: int) -> None:
        """Move the clock to `now_us` (not back) and wake everyone whose deadline it reached."""
        if now_us < self._now_us:
            raise ValueError("a clock does not go back")
        self._now_us = now_us
        while self._sleepers and self._sleepers[0][0] <= now_us:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
        self._forget_done()

    async def sleeping(self, deadline_us: int | None = None) -> None:
        """Return once some coroutine waits on this clock (until `deadline_us`, if given)."""
        while not any(
            deadline_us in (None, deadline) and not waiter.done()
            for deadline, _, waiter in self._sleepers
        ):
            self._went_to_sleep.clear()
            await self._went_to_sleep.wait()

    def _forget_done(self) -> None:
        if any(waiter.done() for _, _, waiter in self._sleepers):
            self._sleepers = [s for s in self._sleepers if not s[2].done()]
            heapq.heapify(self._sleepers)


async def wait_for_event(event: asyncio.Event, timer: Timer, deadline_us: int) -> bool:
    """Wait until `event` is set or `timer` reaches `deadline_us`; whether the event was set."""
    if event.is_set():
        return True
    woken = asyncio.ensure_future(event.wait())
    timeout = asyncio.ensure_future(timer.sleep_until(deadline_us))
    try:
        await asyncio.wait({woken, timeout}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (woken, timeout):
            task.cancel()
        await asyncio.gather(woken, timeout, return_exceptions=True)
    return event.is_set()
