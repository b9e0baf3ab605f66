"""Time that moves only when a test moves it: a `FrozenClock` and a `sleep` that wakes when
the clock passes its deadline, so a timer's behaviour is tested in microseconds of real time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from appforge.services.common.clock import FrozenClock


@dataclass(kw_only=True)
class ManualTime:
    """`sleep(seconds)` returns once `advance` moved `clock` past its deadline.

    `sleeping` is set while anyone sleeps: a test waits on it (with a bound) to know a
    timer is armed before it moves the clock.
    """

    clock: FrozenClock = field(default_factory=FrozenClock)
    slept: list[float] = field(default_factory=list)
    sleeping: asyncio.Event = field(default_factory=asyncio.Event)
    _sleepers: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.clock.now_us() + round(seconds * 1_000_000), woken))
        self.sleeping.set()
        try:
            await woken
        finally:
            self._sleepers = [(due, f) for due, f in self._sleepers if f is not woken]
            if not self._sleepers:
                self.sleeping.clear()

    @property
    def waiting(self) -> int:
        """Sleepers not woken yet."""
        return sum(not woken.done() for _, woken in self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move the clock on and wake every sleeper whose deadline it reached."""
        self.clock.advance(round(seconds * 1_000_000))
        now = self.clock.now_us()
        for due, woken in self._sleepers:
            if due <= now and not woken.done():
                woken.set_result(None)

    async def until_sleeping(self, bound: float = 5.0) -> None:
        """Until someone sleeps (a timer is armed); fails after `bound` real seconds."""
        async with asyncio.timeout(bound):
            await self.sleeping.wait()
