"""The Redis bus against a real Redis: fan-out across processes' buses, and recovery."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as redis

from appforge.services.common.bus import RESYNC, RedisBus


async def test_payloads_reach_subscribers_on_another_bus_in_order(redis_url: str) -> None:
    publisher, subscriber = RedisBus(redis_url), RedisBus(redis_url)
    channel = f"test:{uuid.uuid4().hex}"
    try:
        async with subscriber.subscribe(channel) as sub, subscriber.subscribe(channel) as twin:
            for n in range(50):
                await publisher.publish(channel, str(n).encode())
            await publisher.flush()
            got = [await asyncio.wait_for(sub.get(), 5) for _ in range(50)]
            twin_got = [await asyncio.wait_for(twin.get(), 5) for _ in range(50)]
        assert got == twin_got == [str(n).encode() for n in range(50)]
    finally:
        await publisher.close()
        await subscriber.close()


async def test_a_lost_connection_is_re_established_and_subscribers_told_to_resync(
    redis_url: str,
) -> None:
    bus = RedisBus(redis_url, reconnect_delay=0.05)
    admin = redis.Redis.from_url(redis_url)
    channel = f"test:{uuid.uuid4().hex}"
    try:
        async with bus.subscribe(channel) as sub:
            await admin.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "pubsub"
            )
            assert await asyncio.wait_for(sub.get(), 10) is RESYNC

            async def delivered() -> bytes | None:
                # Publish until the re-established subscription carries it.
                while True:
                    await admin.publish(channel, b"after")
                    try:
                        return await asyncio.wait_for(sub.get(), 0.2)
                    except TimeoutError:
                        continue

            assert await asyncio.wait_for(delivered(), 10) == b"after"
    finally:
        await admin.aclose()
        await bus.close()
