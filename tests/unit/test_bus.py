"""The in-process bus, the bounded subscription queue with its resync marker, and what the
marker is for: a watcher that fell behind re-reads what it missed."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from appforge.services.chat.convert import ProtoChangeCodec
from appforge.services.chat.domain import App, Change, Message, MessageStatus, Role
from appforge.services.chat.service import ChatService
from appforge.services.chat.store import MessageStore
from appforge.services.common.bus import (
    QUEUE_SIZE,
    RESYNC,
    InProcessBus,
    RedisBus,
    Subscription,
    _LocalFanout,
    create_bus,
)
from appforge.services.common.settings import Settings

TIMEOUT = 5.0


async def next_payload(sub: Subscription) -> bytes | None:
    return await asyncio.wait_for(sub.get(), timeout=TIMEOUT)


async def assert_nothing_queued(sub: Subscription) -> None:
    """Nothing is waiting in `sub`: a marker delivered now is the very next payload."""
    sub.deliver(b"<marker>")
    assert await next_payload(sub) == b"<marker>"


class ChangeLog:
    """Stands in for the chat store: user messages of one app, each at the next cursor."""

    def __init__(self, app_id: str) -> None:
        self.app = App(id=app_id, team_id="team", name="app", created_us=1)
        self.messages: list[Message] = []
        self.reads: list[int] = []  # the cursor of every catch-up read, in order

    async def get_app(self, app_id: str) -> App:
        assert app_id == self.app.id
        return self.app

    async def post_user_message(
        self, app_id: str, content: str, request_id: str | None
    ) -> tuple[Message, bool]:
        cursor = len(self.messages) + 1
        message = Message(
            id=f"m{cursor}",
            app_id=app_id,
            role=Role.USER,
            execution_id=None,
            content=content,
            status=MessageStatus.COMPLETED,
            metadata={},
            version=1,
            created_us=cursor,
            updated_us=cursor,
            cursor=cursor,
        )
        self.messages.append(message)
        return message, True

    async def changed_after(self, app_id: str, cursor: int, limit: int) -> list[Message]:
        self.reads.append(cursor)
        return [m for m in self.messages if m.cursor > cursor][:limit]


async def test_a_watcher_that_falls_behind_gets_the_marker_and_rereads_what_it_missed() -> None:
    """What the marker is for: a consumer whose queue overflowed learns it, and resyncs
    from the database instead of waiting, with a gap, for the next poll."""
    bus = InProcessBus()
    log = ChangeLog("app-1")
    # A poll interval far beyond the test's timeouts: only the marker can trigger the read.
    settings = Settings(watch_poll_interval=3600.0)
    chat = ChatService(cast(MessageStore, log), bus, settings, changes=ProtoChangeCodec())
    await chat.post_user_message("app-1", "before the watch", "")
    watch = chat.watch_app("app-1", 0)
    replayed = await asyncio.wait_for(anext(watch), TIMEOUT)  # subscribed, then replayed
    assert (replayed.cursor, log.reads) == (1, [0])

    # The watcher reads nothing while more changes than its queue holds are published.
    behind = QUEUE_SIZE + 1
    for n in range(behind):
        await chat.post_user_message("app-1", f"while away {n}", "")
    got = [message_of(await asyncio.wait_for(anext(watch), TIMEOUT)) for _ in range(behind)]
    assert [m.cursor for m in got] == list(range(2, behind + 2))
    assert got == log.messages[1:]
    assert log.reads[:2] == [0, 1]  # the marker made it re-read from where it was

    # Caught up, it follows the bus again: the next change arrives without a read.
    reads = len(log.reads)
    await chat.post_user_message("app-1", "live again", "")
    live = await asyncio.wait_for(anext(watch), TIMEOUT)
    assert (live.cursor, message_of(live).content) == (behind + 2, "live again")
    assert len(log.reads) == reads
    await watch.aclose()  # type: ignore[attr-defined]


async def test_subscription_yields_payloads_in_order() -> None:
    sub = Subscription("c", size=3)
    for payload in (b"1", b"2", b"3"):
        sub.deliver(payload)
    assert [await next_payload(sub) for _ in range(3)] == [b"1", b"2", b"3"]


async def test_subscription_overflow_replaces_the_backlog_by_one_resync_marker() -> None:
    sub = Subscription("c", size=3)
    for payload in (b"1", b"2", b"3", b"4"):
        sub.deliver(payload)
    assert await next_payload(sub) is RESYNC
    await assert_nothing_queued(sub)


async def test_subscription_keeps_working_after_an_overflow() -> None:
    sub = Subscription("c", size=2)
    for payload in (b"1", b"2", b"3"):
        sub.deliver(payload)
    sub.deliver(b"after")
    assert [await next_payload(sub), await next_payload(sub)] == [RESYNC, b"after"]
    await assert_nothing_queued(sub)


async def test_subscription_iterates_asynchronously() -> None:
    sub = Subscription("c", size=4)
    sub.deliver(b"a")
    sub.deliver(None)
    sub.deliver(b"b")
    seen: list[bytes | None] = []

    async def collect() -> None:
        async for payload in sub:
            seen.append(payload)
            if len(seen) == 3:
                return

    await asyncio.wait_for(collect(), timeout=TIMEOUT)
    assert seen == [b"a", None, b"b"]


async def test_get_waits_for_a_later_delivery() -> None:
    sub = Subscription("c", size=2)
    # Runs only once the test is suspended in get() on the empty queue.
    asyncio.get_running_loop().call_soon(sub.deliver, b"late")
    assert await next_payload(sub) == b"late"


async def test_publish_reaches_every_subscriber_of_the_channel_and_no_other() -> None:
    bus = InProcessBus()
    async with (
        bus.subscribe("app:1") as first,
        bus.subscribe("app:1") as second,
        bus.subscribe("app:2") as other,
    ):
        await bus.publish("app:1", b"hello")
        assert await next_payload(first) == b"hello"
        assert await next_payload(second) == b"hello"
        await assert_nothing_queued(other)
        await bus.publish("app:2", b"two")
        assert await next_payload(other) == b"two"
        await assert_nothing_queued(first)
        await assert_nothing_queued(second)
    await bus.close()


async def test_publish_without_subscribers_is_a_no_op() -> None:
    bus = InProcessBus()
    await bus.publish("nobody", b"x")
    async with bus.subscribe("nobody") as sub:
        await assert_nothing_queued(sub)


async def test_unsubscribed_after_the_context_exits() -> None:
    bus = InProcessBus()
    async with bus.subscribe("app:1") as gone:
        pass
    async with bus.subscribe("app:1") as kept:
        await bus.publish("app:1", b"after-exit")
        assert await next_payload(kept) == b"after-exit"
    await assert_nothing_queued(gone)


async def test_unsubscribed_when_the_context_exits_with_an_error() -> None:
    bus = InProcessBus()
    with pytest.raises(RuntimeError, match="consumer failed"):
        async with bus.subscribe("app:1") as gone:
            raise RuntimeError("consumer failed")
    await bus.publish("app:1", b"after-exit")
    await assert_nothing_queued(gone)


async def test_a_slow_subscriber_overflows_without_affecting_a_fast_one() -> None:
    bus = InProcessBus()
    async with bus.subscribe("app:1") as slow, bus.subscribe("app:1") as fast:
        received = []
        for n in range(QUEUE_SIZE + 1):
            await bus.publish("app:1", str(n).encode())
            received.append(await next_payload(fast))
        assert received == [str(n).encode() for n in range(QUEUE_SIZE + 1)]
        assert await next_payload(slow) is RESYNC
        await bus.publish("app:1", b"next")
        assert await next_payload(slow) == b"next"
        assert await next_payload(fast) == b"next"


def test_local_fanout_reports_first_and_last_subscriber_of_a_channel() -> None:
    fanout = _LocalFanout()
    a1, a2, b1 = Subscription("a"), Subscription("a"), Subscription("b")
    assert [fanout.add(a1), fanout.add(a2), fanout.add(b1)] == [True, False, True]
    assert sorted(fanout.channels()) == ["a", "b"]
    assert [fanout.remove(a1), fanout.remove(a2)] == [False, True]
    assert fanout.channels() == ["b"]
    assert fanout.remove(a1) is False  # removing twice is harmless


async def test_local_fanout_deliver_all_reaches_every_channel() -> None:
    fanout = _LocalFanout()
    a, b = Subscription("a"), Subscription("b")
    fanout.add(a)
    fanout.add(b)
    fanout.deliver_all(RESYNC)
    assert [await next_payload(a), await next_payload(b)] == [RESYNC, RESYNC]


async def test_create_bus_picks_the_in_process_bus_without_a_redis_url() -> None:
    bus = create_bus("")
    assert isinstance(bus, InProcessBus)
    await bus.close()


async def test_create_bus_picks_redis_with_a_url_without_connecting() -> None:
    bus = create_bus("redis://127.0.0.1:1/0")
    assert isinstance(bus, RedisBus)
    await bus.close()


def message_of(change: Change) -> Message:
    """The message of a snapshot change (user messages always arrive as snapshots)."""
    assert not change.is_delta
    message: Message = cast(Any, change).message
    return message
