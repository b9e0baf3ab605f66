"""The hybrid clock: strictly increasing microsecond stamps from any wall clock."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from appforge.services.common.clock import FrozenClock, HybridClock, SystemClock

T0 = 1_700_000_000_000_000


def test_frozen_clock_says_what_it_is_told() -> None:
    clock = FrozenClock(T0)
    assert clock.now_us() == T0
    clock.advance(250)
    assert clock.now_us() == T0 + 250
    clock.set(42)
    assert clock.now_us() == 42


def test_system_clock_is_the_wall_clock_in_microseconds() -> None:
    before = time.time_ns() // 1_000
    now = SystemClock().now_us()
    after = time.time_ns() // 1_000
    assert before <= now <= after


def test_stamps_equal_the_wall_clock_while_it_moves_forward() -> None:
    wall = FrozenClock(T0)
    clock = HybridClock(wall)
    stamps = []
    for step in (1, 7, 1_000, 1_000_000):
        wall.advance(step)
        stamps.append(clock.tick())
    assert stamps == [T0 + 1, T0 + 8, T0 + 1_008, T0 + 1_001_008]


def test_a_stalled_wall_clock_still_gives_strictly_increasing_stamps() -> None:
    clock = HybridClock(FrozenClock(T0))
    stamps = [clock.tick() for _ in range(5)]
    # Never further ahead of the wall clock than the number of stamps taken in the tick.
    assert stamps == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]


def test_a_wall_clock_stepping_back_still_gives_strictly_increasing_stamps() -> None:
    wall = FrozenClock(T0)
    clock = HybridClock(wall)
    first = clock.tick()
    wall.set(T0 - 5_000_000)  # NTP steps the clock back five seconds
    second = clock.tick()
    third = clock.tick()
    assert (first, second, third) == (T0, T0 + 1, T0 + 2)


def test_stamps_follow_the_wall_clock_again_once_it_catches_up() -> None:
    wall = FrozenClock(T0)
    clock = HybridClock(wall)
    clock.tick()
    wall.set(T0 - 1_000)
    assert clock.tick() == T0 + 1
    wall.set(T0 + 500)
    assert clock.tick() == T0 + 500


@pytest.mark.parametrize(
    ("wall_us", "after_us", "expected"),
    [
        pytest.param(T0, T0 + 10_000, T0 + 10_001, id="persisted-stamp-ahead-of-wall-clock"),
        pytest.param(T0, T0, T0 + 1, id="persisted-stamp-equal-to-wall-clock"),
        pytest.param(T0, T0 - 10_000, T0, id="persisted-stamp-behind-wall-clock"),
        pytest.param(T0, 0, T0, id="no-persisted-stamp"),
    ],
)
def test_tick_after_resumes_after_a_persisted_stamp(
    wall_us: int, after_us: int, expected: int
) -> None:
    clock = HybridClock(FrozenClock(wall_us))
    assert clock.tick(after_us=after_us) == expected


def test_tick_after_keeps_later_stamps_ahead_of_the_persisted_one() -> None:
    clock = HybridClock(FrozenClock(T0))
    resumed = clock.tick(after_us=T0 + 10_000)
    assert [clock.tick() for _ in range(3)] == [resumed + 1, resumed + 2, resumed + 3]


def test_tick_after_an_old_stamp_never_goes_back() -> None:
    clock = HybridClock(FrozenClock(T0))
    clock.tick(after_us=T0 + 10_000)
    assert clock.tick(after_us=T0) == T0 + 10_002


def test_now_us_is_the_wall_clock_not_the_last_stamp() -> None:
    wall = FrozenClock(T0)
    clock = HybridClock(wall)
    clock.tick(after_us=T0 + 10_000)
    assert clock.now_us() == T0


def test_default_wall_clock_is_the_system_clock() -> None:
    before = time.time_ns() // 1_000
    stamp = HybridClock().tick()
    after = time.time_ns() // 1_000
    assert before <= stamp <= after + 1


def _tick_concurrently(clock: HybridClock, threads: int, ticks: int) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads, timeout=10)

    def worker(out: list[int]) -> None:
        barrier.wait()
        for _ in range(ticks):
            out.append(clock.tick())

    workers = [threading.Thread(target=worker, args=(out,)) for out in results]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in workers)
    return results


def test_concurrent_ticks_on_a_stalled_clock_are_unique_and_dense() -> None:
    threads, ticks = 8, 2_000
    results = _tick_concurrently(HybridClock(FrozenClock(T0)), threads, ticks)
    stamps = [stamp for out in results for stamp in out]
    assert sorted(stamps) == list(range(T0, T0 + threads * ticks))
    for out in results:
        assert all(a < b for a, b in itertools.pairwise(out))


def test_concurrent_ticks_on_the_system_clock_are_unique() -> None:
    threads, ticks = 8, 2_000
    results = _tick_concurrently(HybridClock(SystemClock()), threads, ticks)
    stamps = [stamp for out in results for stamp in out]
    assert len(stamps) == threads * ticks
    assert len(set(stamps)) == len(stamps)
    for out in results:
        assert all(a < b for a, b in itertools.pairwise(out))
