"""How a turn's streamed text becomes writes: coalesced by time and by size, each piece at
its offset, the whole equal to the model's text (clipped as `clip_text` clips it)."""

from __future__ import annotations

import asyncio
import random

import pytest

from appforge.services.builder.domain import TextClip, clip_text
from appforge.services.builder.models.base import ModelError
from appforge.services.builder.text_stream import FlushPolicy, TextStream
from appforge.services.common.errors import Unavailable
from appforge.services.common.flow import FlowItem, ItemKind
from tests.manual_time import ManualTime

WAIT = 5.0  # real seconds any wait here may take: everything is in memory
STAMP = 1_700_000_000_000_123


class Flow:
    """The chat side of a stream: allocates seqs, takes pieces the way chat applies them."""

    def __init__(self, *, fail: int = 0) -> None:
        self.allocated = 0
        self.pieces: list[FlowItem] = []
        self.text = ""
        self.fail = fail  # writes to refuse before taking any
        self.refused = asyncio.Event()
        self._written = asyncio.Condition()

    async def allocate(self) -> tuple[int, int]:
        self.allocated += 1
        return 7, STAMP

    async def write(self, item: FlowItem) -> None:
        if self.fail:
            self.fail -= 1
            self.refused.set()
            raise Unavailable("chat is down")
        assert item.kind is ItemKind.MESSAGE and (item.seq, item.timestamp_us) == (7, STAMP)
        assert item.text_offset <= len(self.text), "a piece past the end"
        assert self.text[item.text_offset :] == item.text[: len(self.text) - item.text_offset]
        self.text = self.text[: item.text_offset] + item.text
        async with self._written:
            self.pieces.append(item)
            self._written.notify_all()

    async def until(self, writes: int) -> None:
        async with asyncio.timeout(WAIT), self._written:
            await self._written.wait_for(lambda: len(self.pieces) >= writes)


def stream(
    flow: Flow, time: ManualTime, *, interval: float = 0.05, chars: int = 256, limit: int = 1000
) -> TextStream:
    return TextStream(
        allocate=flow.allocate,
        write=flow.write,
        policy=FlushPolicy(interval=interval, max_chars=chars),
        limit_bytes=limit,
        sleep=time.sleep,
    )


def offsets(flow: Flow) -> list[int]:
    return [piece.text_offset for piece in flow.pieces]


async def test_text_waits_for_the_interval_then_goes_in_one_write() -> None:
    flow, time = Flow(), ManualTime()
    text = stream(flow, time)
    for word in ("Hello", ",", " world"):
        await text.add(word)
    await time.until_sleeping()
    assert time.slept == [0.05]
    time.advance(0.049)
    assert time.waiting == 1 and flow.pieces == []  # not yet: the interval has not passed
    time.advance(0.001)
    assert time.waiting == 0
    await flow.until(1)
    assert [(p.text, p.text_offset) for p in flow.pieces] == [("Hello, world", 0)]

    await text.add("!")  # new text waits a new interval
    await time.until_sleeping()
    time.advance(0.05)
    await flow.until(2)
    await text.finish("Hello, world!")
    assert [(p.text, p.text_offset) for p in flow.pieces] == [("Hello, world", 0), ("!", 12)]
    assert flow.allocated == 1 and text.writes == 2


async def test_enough_waiting_text_is_written_at_once_without_time_passing() -> None:
    flow, time = Flow(), ManualTime()
    start = time.clock.now_us()
    text = stream(flow, time, interval=60.0, chars=8)
    for word in ("Stream", "ing", " is", " fun", " and", " fast"):
        await text.add(word)
    assert [p.text for p in flow.pieces] == ["Streaming", " is fun and"]
    assert time.clock.now_us() == start  # the clock never moved
    await text.finish("Streaming is fun and fast")
    assert [p.text for p in flow.pieces] == ["Streaming", " is fun and", " fast"]
    assert offsets(flow) == [0, 9, 20]


@pytest.mark.parametrize("seed", range(8))
async def test_pieces_are_contiguous_from_zero_and_join_to_the_models_text(seed: int) -> None:
    rng = random.Random(seed)
    whole = "".join(
        rng.choice(["a", "é", " ", "名", "🙂", "\n"]) for _ in range(rng.randint(1, 400))
    )
    cuts = sorted(rng.sample(range(1, len(whole)), k=min(len(whole) - 1, rng.randint(0, 60))))
    parts = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    flow, time = Flow(), ManualTime()
    text = stream(flow, time, chars=rng.randint(1, 40))
    for n, part in enumerate(parts):
        await text.add(part)
        if n % 7 == 3:  # now and then the timer fires too
            time.advance(0.05)
    await text.finish(whole)
    assert flow.text == whole
    ends = [p.text_offset + len(p.text) for p in flow.pieces]
    assert offsets(flow) == [0, *ends[:-1]]  # each starts where the one before ended
    assert all(p.text for p in flow.pieces)


async def test_the_text_no_one_streamed_comes_with_the_turn() -> None:
    flow, time = Flow(), ManualTime()
    text = stream(flow, time)
    await text.add("Half of it")
    await text.finish("Half of it, and the rest.")
    assert flow.text == "Half of it, and the rest." and len(flow.pieces) == 1

    silent = Flow()
    await stream(silent, time).finish("All at once.")  # a model that streams nothing
    assert [(p.text, p.text_offset) for p in silent.pieces] == [("All at once.", 0)]


async def test_no_text_allocates_no_item_and_writes_nothing() -> None:
    flow, time = Flow(), ManualTime()
    text = stream(flow, time)
    await text.add("")
    await text.finish("")
    assert (flow.allocated, flow.pieces, text.seq) == (0, [], None)


async def test_the_seq_is_allocated_when_the_first_text_arrives() -> None:
    flow, time = Flow(), ManualTime()
    text = stream(flow, time)
    assert (flow.allocated, text.seq) == (0, None)
    await text.add("H")
    assert (flow.allocated, text.seq, flow.pieces) == (1, 7, [])
    await text.finish("Hi")
    assert flow.allocated == 1


async def test_a_turn_that_contradicts_what_it_streamed_is_a_model_error() -> None:
    flow, time = Flow(), ManualTime()
    text = stream(flow, time, chars=1)
    await text.add("Yes")
    with pytest.raises(ModelError, match="does not start with the text it streamed"):
        await text.finish("No")
    assert flow.text == "Yes"


async def test_a_failed_turn_keeps_what_it_streamed() -> None:
    flow, time = Flow(), ManualTime()
    text = stream(flow, time)
    await text.add("I'll build")
    await text.add(" a calc")
    await text.finish()  # no turn: the model failed
    assert [(p.text, p.text_offset) for p in flow.pieces] == [("I'll build a calc", 0)]


async def test_a_write_that_failed_in_the_background_is_raised_and_its_piece_resent() -> None:
    flow, time = Flow(fail=1), ManualTime()
    text = stream(flow, time)
    await text.add("lost?")
    await time.until_sleeping()
    time.advance(0.05)
    await asyncio.wait_for(flow.refused.wait(), WAIT)  # the timer's write was refused
    with pytest.raises(Unavailable):
        await text.add(" no")  # the model's next piece learns of it
    await text.finish()  # the turn failed: what was taken is written again, at its offset
    assert [(p.text, p.text_offset) for p in flow.pieces] == [("lost?", 0)]


async def test_close_stops_a_sleeping_timer_and_writes_nothing() -> None:
    flow, time = Flow(), ManualTime()
    text = stream(flow, time)
    await text.add("pending")
    await time.until_sleeping()
    await text.close()
    assert not time.sleeping.is_set()
    time.advance(1.0)
    await text.add(" more")  # a closed stream takes nothing
    assert flow.pieces == []


async def test_a_text_over_the_limit_streams_to_exactly_what_clip_text_keeps() -> None:
    whole = "0123456789" * 5 + "é" * 20
    flow, time = Flow(), ManualTime()
    text = stream(flow, time, chars=1, limit=60)
    for char in whole:
        await text.add(char)
        assert len(flow.text.encode()) <= 60
    await text.finish(whole)
    assert flow.text == clip_text(whole, 60) and flow.text.endswith("…")
    assert len(flow.text.encode()) <= 60


@pytest.mark.parametrize(
    "whole",
    ["x" * 58, "x" * 59, "x" * 60, "x" * 61, "x" * 57 + "é", "x" * 58 + "é", "x" * 59 + "€"],
)
@pytest.mark.parametrize("step", [1, 2, 5, 100])
def test_a_clip_taken_piece_by_piece_is_clip_text_of_the_whole(whole: str, step: int) -> None:
    clip, taken = TextClip(60), ""
    for start in range(0, len(whole), step):
        clip.add(whole[start : start + step])
        taken += clip.take()
        assert clip_text(whole, 60).startswith(taken)  # nothing handed out is taken back
    taken += clip.take(final=True)
    assert taken == clip_text(whole, 60)


def test_a_flush_policy_needs_a_positive_interval_and_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        FlushPolicy(interval=0)
    with pytest.raises(ValueError, match="positive"):
        FlushPolicy(max_chars=0)
