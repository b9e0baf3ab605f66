"""A final notice one builder replica could not deliver is announced on the bus, and another
replica tries the outbox at once instead of at its next sweep; a replica ignores its own
announcements, and what the outbox retries is not announced again."""

from __future__ import annotations

import asyncio
from typing import Any

from appforge.services.builder.domain import Execution, ExecutionStatus
from appforge.services.builder.notices import FinalNotices, announcer, listen_for_notices
from appforge.services.common.bus import InProcessBus
from appforge.services.common.clock import HybridClock
from appforge.services.common.errors import Unavailable

ENDED = Execution(
    id="e1",
    app_id="a1",
    user_message_id="u1",
    message_id="m1",
    status=ExecutionStatus.FAILED,
    model="scripted",
    prompt="build a calculator",
    last_seq=0,
    error="the builder shut down during the execution",
    owner=None,
    created_us=1,
    updated_us=2,
    finished_us=2,
    app_version_id="",
    deployment_id="",
)


class Outbox:
    """The store's side of notices: one ended execution, due until someone notifies it."""

    def __init__(self) -> None:
        self.notified: list[str] = []
        self.claims = 0
        self.delivered = asyncio.Event()

    async def get(self, execution_id: str) -> Execution:
        return ENDED

    async def calls(self, execution_id: str) -> list[Any]:
        return []

    async def claim_notices(self, now_us: int, *, retry_after_us: int, limit: int) -> list[str]:
        self.claims += 1
        return [] if self.notified else [ENDED.id]

    async def mark_notified(self, execution_id: str, now_us: int) -> None:
        self.notified.append(execution_id)
        self.delivered.set()


class Chat:
    """A chat this replica can reach, or one it cannot (`down`)."""

    def __init__(self, *, down: bool) -> None:
        self.down = down
        self.upserts: list[str] = []

    async def upsert(self, *, app_id: str, execution_id: str, **_: Any) -> str:
        if self.down:
            raise Unavailable("chat unavailable: UNAVAILABLE: connection refused")
        self.upserts.append(execution_id)
        return "m1"


def replica(outbox: Outbox, chat: Chat) -> FinalNotices:
    return FinalNotices(outbox, chat, HybridClock(), json_limit=65536)  # type: ignore[arg-type]


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)  # a subscription has no event to wait on; bounded


async def test_another_replica_delivers_an_announced_notice_at_once() -> None:
    bus, outbox = InProcessBus(), Outbox()
    cut_off, reachable = Chat(down=True), Chat(down=False)
    a, b = replica(outbox, cut_off), replica(outbox, reachable)
    a.announce, b.announce = announcer(bus, "A"), announcer(bus, "B")
    listeners = [
        asyncio.create_task(listen_for_notices(bus, a, "A")),
        asyncio.create_task(listen_for_notices(bus, b, "B")),
    ]
    try:
        await until(lambda: len(bus._fanout.channels()) == 1)  # both listening
        assert await a.deliver(ENDED.id) is False  # A cannot reach chat
        await asyncio.wait_for(outbox.delivered.wait(), 5)
        assert outbox.notified == [ENDED.id]
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    assert reachable.upserts == [ENDED.id]  # B delivered it, well before any sweep
    assert cut_off.upserts == [] and outbox.claims == 1  # A did not retry its own


async def test_what_the_outbox_retries_is_not_announced_again() -> None:
    outbox = Outbox()
    announced: list[str] = []

    async def record(execution_id: str) -> None:
        announced.append(execution_id)

    a = replica(outbox, Chat(down=True))
    a.announce = record
    assert await a.deliver_due() == 0
    assert announced == []
    assert await a.deliver(ENDED.id) is False
    assert announced == [ENDED.id]
