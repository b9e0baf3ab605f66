"""The timers workers wait on: a manual clock wakes sleepers exactly at their deadlines."""

from __future__ import annotations

import asyncio

import pytest

from appforge.services.deployer.timing import ManualTimer, WallTimer, wait_for_event

T0 = 1_800_000_000_000_000
WAIT = 5.0  # bound on every real wait; the events come in microseconds


async def test_a_sleeper_wakes_when_the_clock_reaches_its_deadline_not_before() -> None:
    timer = ManualTimer(T0)
    sleeper = asyncio.create_task(timer.sleep_until(T0 + 10))
    await asyncio.wait_for(timer.sleeping(T0 + 10), WAIT)

    timer.set(T0 + 9)
    await asyncio.sleep(0)
    assert not sleeper.done() and timer.next_deadline_us == T0 + 10

    timer.advance(1e-6)
    await asyncio.wait_for(sleeper, WAIT)
    assert timer.now_us() == T0 + 10 and timer.next_deadline_us is None


async def test_a_deadline_already_passed_returns_at_once() -> None:
    timer = ManualTimer(T0)
    await asyncio.wait_for(timer.sleep_until(T0), WAIT)
    assert timer.next_deadline_us is None


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    timer = ManualTimer(T0)
    sleeper = asyncio.create_task(timer.sleep_until(T0 + 5))
    await asyncio.wait_for(timer.sleeping(), WAIT)
    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)
    assert timer.next_deadline_us is None


def test_the_clock_does_not_go_back() -> None:
    timer = ManualTimer(T0)
    with pytest.raises(ValueError):
        timer.set(T0 - 1)
    with pytest.raises(ValueError):
        timer.advance(-1)


@pytest.mark.parametrize("set_event", [True, False])
async def test_wait_for_event_ends_at_the_event_or_the_deadline(set_event: bool) -> None:
    timer = ManualTimer(T0)
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_for_event(event, timer, T0 + 1_000_000))
    await asyncio.wait_for(timer.sleeping(T0 + 1_000_000), WAIT)
    if set_event:
        event.set()
    else:
        timer.advance(1.0)
    assert await asyncio.wait_for(waiting, WAIT) is set_event
    assert timer.next_deadline_us is None  # the losing wait is cancelled and forgotten


async def test_the_wall_timer_sleeps_until_the_deadline_of_its_clock() -> None:
    timer = WallTimer()
    deadline = timer.now_us() + 20_000
    await asyncio.wait_for(timer.sleep_until(deadline), WAIT)
    assert timer.now_us() >= deadline
