"""Fan-out of change events: Redis pub/sub across processes, or in-process.

A subscription yields message payloads (bytes) or `None`. `None` means "you may have
missed something" (a slow consumer's queue overflowed, or the Redis connection was lost
and re-established): the consumer must resynchronise from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from redis.exceptions import RedisError

from appforge.services.common import tracing
from appforge.services.common.errors import Unavailable
from appforge.services.common.logging import get_logger

log = get_logger(__name__)

QUEUE_SIZE = 1024
OUTBOX_SIZE = 10_000
PUBLISH_BATCH = 256
RESYNC: None = None


class Subscription:
    """A bounded queue of payloads for one subscriber of one channel."""

    def __init__(self, channel: str, size: int = QUEUE_SIZE) -> None:
        self.channel = channel
        self.size = size
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size)

    @property
    def backlog(self) -> int:
        """Payloads waiting (never more than `size`)."""
        return self._queue.qsize()

    def deliver(self, payload: bytes | None) -> None:
        """Queue a payload; on overflow, replace the backlog by one resync marker."""
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    async def get(self) -> bytes | None:
        """The next payload, or `None` when the subscriber must resynchronise."""
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[bytes | None]:
        return self

    async def __anext__(self) -> bytes | None:
        return await self.get()


class Bus(Protocol):
    """Publish bytes on a channel; subscribe to a channel."""

    async def publish(self, channel: str, payload: bytes) -> None: ...

    def subscribe(
        self, channel: str, *, size: int = QUEUE_SIZE
    ) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """A subscription buffering at most `size` payloads (then one resync marker)."""
        ...

    async def close(self) -> None: ...


class _LocalFanout:
    """The subscriber registry both buses share."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> bool:
        """Register; True when this is the channel's first local subscriber."""
        subs = self._subscribers.setdefault(sub.channel, set())
        subs.add(sub)
        return len(subs) == 1

    def remove(self, sub: Subscription) -> bool:
        """Unregister; True when the channel has no local subscriber left."""
        subs = self._subscribers.get(sub.channel)
        if subs is None:
            return False
        subs.discard(sub)
        if not subs:
            del self._subscribers[sub.channel]
            return True
        return False

    def deliver(self, channel: str, payload: bytes | None) -> None:
        for sub in tuple(self._subscribers.get(channel, ())):
            sub.deliver(payload)

    def deliver_all(self, payload: bytes | None) -> None:
        for channel in tuple(self._subscribers):
            self.deliver(channel, payload)

    def channels(self) -> list[str]:
        return list(self._subscribers)


class InProcessBus:
    """Fan-out within one process (the embedded default)."""

    def __init__(self) -> None:
        self._fanout = _LocalFanout()

    async def publish(self, channel: str, payload: bytes) -> None:
        self._fanout.deliver(channel, payload)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channel: str, *, size: int = QUEUE_SIZE
    ) -> AsyncIterator[Subscription]:
        sub = Subscription(channel, size)
        self._fanout.add(sub)
        try:
            yield sub
        finally:
            self._fanout.remove(sub)

    async def close(self) -> None:
        return None


class RedisBus:
    """Fan-out across processes through Redis pub/sub.

    One Redis connection carries every subscription of the process; a reader task routes
    messages to local subscribers. `subscribe` returns only once Redis has confirmed the
    subscription, so nothing published afterwards can be missed. When the connection
    drops, the reader reconnects, resubscribes and tells every subscriber to resync.
    """

    def __init__(
        self, url: str, *, reconnect_delay: float = 0.5, subscribe_timeout: float = 5.0
    ) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_connect_timeout=subscribe_timeout)
        self._subscribe_timeout = subscribe_timeout
        self._fanout = _LocalFanout()
        self._reconnect_delay = reconnect_delay
        self._pubsub = self._redis.pubsub()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self._publisher: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, payload: bytes) -> None:
        """Queue a payload; a background task sends queued payloads in pipelined batches.

        The caller (a committed write) never waits on Redis. A payload that cannot be sent
        is dropped with a warning: watchers recover it from the database on their next
        catch-up (a gap in cursors, or the poll interval).
        """
        try:
            with tracing.span(
                "redis publish", kind="producer", within=True, attributes={"channel": channel}
            ):
                self._outbox.put_nowait((channel, payload))  # sent, pipelined, by the task
        except asyncio.QueueFull:
            log.warning("bus_outbox_full", channel=channel)
            return
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(
                self._publish_forever(), name="redis-bus-publisher"
            )

    async def _publish_forever(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < PUBLISH_BATCH:
                batch.append(self._outbox.get_nowait())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
            except (OSError, RedisError) as exc:
                log.warning("bus_publish_failed", dropped=len(batch), error=repr(exc))
            finally:
                for _ in batch:
                    self._outbox.task_done()

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every queued payload was handed to Redis."""
        if self._publisher is not None and not self._publisher.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channel: str, *, size: int = QUEUE_SIZE
    ) -> AsyncIterator[Subscription]:
        sub = Subscription(channel, size)
        try:
            with tracing.span(
                "redis subscribe", kind="client", within=True, attributes={"channel": channel}
            ):
                await self._subscribed(sub, channel)
        except (OSError, RedisError, TimeoutError) as exc:
            async with self._lock:
                if self._fanout.remove(sub):
                    self._confirmed.pop(channel, None)
            raise Unavailable(f"redis unavailable while subscribing: {exc!r}") from exc
        try:
            yield sub
        finally:
            async with self._lock:
                if self._fanout.remove(sub):
                    self._confirmed.pop(channel, None)
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(channel)

    async def _subscribed(self, sub: Subscription, channel: str) -> None:
        """`sub` added; Redis's confirmation awaited (bounded) for the channel."""
        async with self._lock:
            if self._fanout.add(sub):
                confirmed = self._confirmed.setdefault(channel, asyncio.Event())
                await self._pubsub.subscribe(channel)
                self._ensure_reader()
            else:
                confirmed = self._confirmed[channel]
        await asyncio.wait_for(confirmed.wait(), timeout=self._subscribe_timeout)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="redis-bus-reader")

    async def _read_forever(self) -> None:
        # Ends when nobody listens; the next subscribe starts a new reader.
        while not self._closed and self._fanout.channels():
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._recover(exc)
                continue
            if message is None:
                continue
            self._route(message)

    def _route(self, message: dict[str, object]) -> None:
        channel = message.get("channel")
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        kind = message.get("type")
        if kind == "subscribe":
            event = self._confirmed.get(name)
            if event is not None:
                event.set()
        elif kind == "message":
            data = message.get("data")
            if isinstance(data, bytes):
                self._fanout.deliver(name, data)

    async def _recover(self, exc: Exception) -> None:
        log.warning("redis_bus_disconnected", error=repr(exc))
        while not self._closed:
            await asyncio.sleep(self._reconnect_delay)
            try:
                async with self._lock:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8.2
                    self._pubsub = self._redis.pubsub()
                    channels = self._fanout.channels()
                    if channels:
                        await self._pubsub.subscribe(*channels)
                # Anything published while we were away is lost on the wire: resync.
                self._fanout.deliver_all(RESYNC)
                log.info("redis_bus_reconnected", channels=len(channels))
                return
            except Exception as retry_exc:
                log.warning("redis_bus_reconnect_failed", error=repr(retry_exc))

    async def close(self) -> None:
        await self.flush()
        self._closed = True
        for task in (self._reader, self._publisher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8.2
        await self._redis.aclose()
        # Every connection the pool ever handed out, the subscriber's included, closed and
        # waited for: none is left for the garbage collector to find open.
        await self._redis.connection_pool.disconnect(inuse_connections=True)


def create_bus(redis_url: str) -> Bus:
    """Redis when a URL is given, else the in-process bus."""
    return RedisBus(redis_url) if redis_url else InProcessBus()
