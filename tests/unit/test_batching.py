"""WriteBatcher: alone when a slot is free, together when not, in order per key."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from appforge.services.common.batching import Outcome, WriteBatcher

Write = tuple[str, int]  # (key, value)


class Runner:
    """Records each batch; a batch finishes when the test opens its gate."""

    def __init__(self) -> None:
        self.batches: list[list[Write]] = []
        self.gates: list[asyncio.Event] = []
        self.started = asyncio.Condition()
        self.running = 0
        self.most_running = 0
        self.fail_with: Exception | None = None

    async def __call__(self, writes: Sequence[Write]) -> list[Outcome[int]]:
        gate = asyncio.Event()
        async with self.started:
            self.batches.append(list(writes))
            self.gates.append(gate)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.started.notify_all()
        try:
            await gate.wait()
        finally:
            self.running -= 1
        if self.fail_with is not None:
            raise self.fail_with
        return [ValueError(key) if value < 0 else value * 10 for key, value in writes]

    async def wait_batches(self, count: int) -> None:
        async with self.started:
            await asyncio.wait_for(
                self.started.wait_for(lambda: len(self.batches) >= count), timeout=2
            )

    def open(self, index: int) -> None:
        self.gates[index].set()


def _batcher(runner: Runner, *, in_flight: int = 1, max_size: int = 4) -> WriteBatcher[Write, int]:
    return WriteBatcher(runner, key=lambda w: w[0], in_flight=in_flight, max_size=max_size)


async def test_a_write_with_a_free_slot_goes_alone_at_once() -> None:
    runner = Runner()
    batcher = _batcher(runner)
    task = asyncio.create_task(batcher.submit(("a", 1)))
    await runner.wait_batches(1)
    assert runner.batches == [[("a", 1)]]
    runner.open(0)
    assert await asyncio.wait_for(task, 2) == 10


async def test_writes_that_wait_leave_together_in_order_up_to_the_size() -> None:
    runner = Runner()
    batcher = _batcher(runner, max_size=3)
    first = asyncio.create_task(batcher.submit(("a", 1)))
    await runner.wait_batches(1)
    waiting = [asyncio.create_task(batcher.submit((f"k{n}", n))) for n in range(2, 7)]
    await asyncio.sleep(0)  # let them queue behind the running batch
    assert batcher.waiting == 5
    runner.open(0)
    await runner.wait_batches(2)
    assert runner.batches[1] == [("k2", 2), ("k3", 3), ("k4", 4)]
    runner.open(1)
    await runner.wait_batches(3)
    assert runner.batches[2] == [("k5", 5), ("k6", 6)]
    runner.open(2)
    assert await asyncio.wait_for(asyncio.gather(first, *waiting), 2) == [10, 20, 30, 40, 50, 60]
    assert runner.most_running == 1


async def test_at_most_in_flight_batches_run_at_once() -> None:
    runner = Runner()
    batcher = _batcher(runner, in_flight=2, max_size=2)
    tasks = [asyncio.create_task(batcher.submit((f"k{n}", n))) for n in range(6)]
    await runner.wait_batches(2)
    await asyncio.sleep(0)
    assert len(runner.batches) == 2 and runner.running == 2
    for n in range(4):
        runner.open(n)
        if n < 3:
            await runner.wait_batches(min(n + 3, 4))
    assert await asyncio.wait_for(asyncio.gather(*tasks), 2) == [0, 10, 20, 30, 40, 50]
    assert runner.most_running == 2
    # Both free slots took a write at once; the other four left two by two.
    assert [len(b) for b in runner.batches] == [1, 1, 2, 2]


async def test_a_key_is_never_in_two_running_batches_and_keeps_its_order() -> None:
    runner = Runner()
    batcher = _batcher(runner, in_flight=2, max_size=4)
    first = asyncio.create_task(batcher.submit(("a", 1)))
    await runner.wait_batches(1)
    # "a" is running: its next writes wait (in order) while "b" takes the free slot.
    later = [asyncio.create_task(batcher.submit(w)) for w in [("a", 2), ("b", 3), ("a", 4)]]
    await runner.wait_batches(2)
    assert runner.batches[1] == [("b", 3)]
    runner.open(1)
    runner.open(0)
    await runner.wait_batches(3)
    assert runner.batches[2] == [("a", 2), ("a", 4)]
    runner.open(2)
    assert await asyncio.wait_for(asyncio.gather(first, *later), 2) == [10, 20, 30, 40]


async def test_each_write_gets_its_own_outcome_and_a_failed_batch_fails_only_its_own() -> None:
    runner = Runner()
    batcher = _batcher(runner)
    first = asyncio.create_task(batcher.submit(("a", 1)))
    await runner.wait_batches(1)
    good, bad = (
        asyncio.create_task(batcher.submit(("b", 2))),
        asyncio.create_task(batcher.submit(("c", -1))),
    )
    await asyncio.sleep(0)
    runner.open(0)
    await runner.wait_batches(2)
    runner.open(1)
    assert await asyncio.wait_for(good, 2) == 20
    with pytest.raises(ValueError, match="c"):
        await asyncio.wait_for(bad, 2)
    assert await first == 10

    runner.fail_with = RuntimeError("database went away")
    doomed = asyncio.create_task(batcher.submit(("d", 4)))
    await runner.wait_batches(3)
    runner.open(2)
    with pytest.raises(RuntimeError, match="went away"):
        await asyncio.wait_for(doomed, 2)
    runner.fail_with = None
    after = asyncio.create_task(batcher.submit(("d", 5)))
    await runner.wait_batches(4)
    runner.open(3)
    assert await asyncio.wait_for(after, 2) == 50


async def test_a_write_whose_caller_left_before_its_batch_is_not_sent() -> None:
    runner = Runner()
    batcher = _batcher(runner)
    first = asyncio.create_task(batcher.submit(("a", 1)))
    await runner.wait_batches(1)
    gone = asyncio.create_task(batcher.submit(("b", 2)))
    kept = asyncio.create_task(batcher.submit(("c", 3)))
    await asyncio.sleep(0)
    gone.cancel()
    runner.open(0)
    await runner.wait_batches(2)
    assert runner.batches[1] == [("c", 3)]
    runner.open(1)
    assert await asyncio.wait_for(kept, 2) == 30
    assert await first == 10
    assert gone.cancelled()


async def test_drain_waits_for_running_batches() -> None:
    runner = Runner()
    batcher = _batcher(runner)
    task = asyncio.create_task(batcher.submit(("a", 1)))
    await runner.wait_batches(1)
    drained = asyncio.create_task(batcher.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    runner.open(0)
    await asyncio.wait_for(drained, 2)
    assert task.done() and task.result() == 10


def test_sizes_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WriteBatcher(Runner(), key=lambda w: w[0], in_flight=0, max_size=1)
