"""The change bus as WatchApp sees it: the apps' Redis channels, and the events that would
send WatchApp's watchers to the database because they arrived out of cursor order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from appforge.api.chat.v1 import chat_pb2
from appforge.services.common import keys


class BusMonitor:
    """Listens to the apps' change channels on Redis the way chat's WatchApp does.

    WatchApp forwards a live event only when its cursor is exactly one past the last one
    sent; on any other (a gap: a later change published before an earlier one) it reads
    the app's changes from the database instead. Every watcher of the app does that read.
    This counts the events that arrive with a gap and the stale ones behind them, and
    estimates the catch-up reads (gaps x watchers of the app; exact when each catch-up
    reaches just the cursor that revealed the gap).
    """

    def __init__(self, redis_url: str, watchers_per_app: Counter[str]) -> None:
        self.redis_url = redis_url
        self.watchers_per_app = watchers_per_app
        self.channels = {keys.app_changes_channel(a): a for a in watchers_per_app}
        self.last: dict[str, int] = {}
        self.counts: Counter[str] = Counter()

    def on_payload(self, app_id: str, payload: bytes) -> None:
        cursor = chat_pb2.MessageEvent.FromString(payload).cursor
        last = self.last.get(app_id)
        self.counts["events"] += 1
        if last is None or cursor == last + 1:
            self.last[app_id] = cursor
        elif cursor <= last:
            self.counts["stale"] += 1
        else:
            self.counts["gaps"] += 1
            self.counts["catch_ups"] += self.watchers_per_app[app_id]
            self.last[app_id] = cursor

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[BusMonitor]:
        client = aioredis.Redis.from_url(self.redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(*self.channels)

        async def read() -> None:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    channel = message["channel"]
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    self.on_payload(self.channels[name], message["data"])

        reader = asyncio.create_task(read())
        try:
            yield self
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8.2
            await client.aclose()
