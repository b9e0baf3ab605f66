"""Batched assistant-message writes on PostgreSQL (`chat_upsert_assistant_batch_v1`).

Under load the writer sends the writes that wait for a slot together, in one transaction.
A batch must give each write exactly what it would have got alone: the same rules, its own
error, nothing written for a refused write, and no deadlock between batches.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from prometheus_client import REGISTRY

from appforge.services.chat.domain import (
    AssistantUpsert,
    FlowItem,
    ItemKind,
    MessageView,
    UpsertResult,
)
from appforge.services.chat.store import MessageStore
from appforge.services.chat.store.pg_writer import PgAssistantWriter, Write
from appforge.services.common import db
from appforge.services.common.clock import HybridClock
from appforge.services.common.errors import FailedPrecondition
from tests.unit.test_chat_domain_convergence import State, apply, random_scenario


@pytest_asyncio.fixture
async def store(pg_url: str) -> AsyncIterator[MessageStore]:
    engine = db.create_engine(pg_url)
    # One batch at a time, so concurrent writes must share batches.
    store = MessageStore(engine, HybridClock(), writer_pool_size=4, write_batches=1)
    yield store
    await store.close()
    await engine.dispose()


def _writer(store: MessageStore) -> PgAssistantWriter:
    writer = store._writer
    assert isinstance(writer, PgAssistantWriter)
    return writer


def _text(seq: int, text: str, offset: int = 0) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.MESSAGE, text=text, text_offset=offset)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _batches_observed() -> float:
    return _metric("appforge_chat_write_batch_size_count")


async def test_concurrent_executions_share_batches_and_each_ends_as_the_domain_says(
    store: MessageStore,
) -> None:
    apps = [await store.create_app("batch", f"b-{uuid.uuid4().hex[:8]}") for _ in range(3)]
    scenarios = {str(uuid.uuid4()): random_scenario(seed) for seed in range(24)}
    before = _batches_observed()
    writes_sent = 0

    async def run(n: int, execution_id: str) -> tuple[str, UpsertResult]:
        nonlocal writes_sent
        writes, _ = scenarios[execution_id]
        order = list(writes)
        random.Random(n).shuffle(order)
        state = State({}, {})
        version = 0
        result: UpsertResult | None = None
        for k, write in enumerate(order):
            state, changed = apply(state, write)
            result = await store.upsert_assistant(
                AssistantUpsert(
                    app_id=apps[n % 3].id, execution_id=execution_id, items=tuple(write)
                ),
                MessageView.BASIC,
            )
            writes_sent += 1
            assert result.changed == (changed or k == 0), f"{execution_id} write {k}"
            version += result.changed
            assert result.message.version == version
        assert result is not None
        return execution_id, result

    done = await asyncio.wait_for(
        asyncio.gather(*(run(n, e) for n, e in enumerate(scenarios))), timeout=60
    )
    for execution_id, _ in done:
        _, expected = scenarios[execution_id]
        stored = await store.get_message_by_execution(execution_id)
        assert stored.flow == expected
    # Fewer transactions than writes: concurrent writes left together.
    assert _batches_observed() - before < writes_sent


async def test_a_refused_write_in_a_batch_gets_its_error_and_the_others_are_written(
    store: MessageStore,
) -> None:
    app = await store.create_app("batch", f"r-{uuid.uuid4().hex[:8]}")
    ok, refused, fine = (str(uuid.uuid4()) for _ in range(3))
    for execution_id in (ok, refused, fine):
        await store.upsert_assistant(
            AssistantUpsert(app_id=app.id, execution_id=execution_id, items=(_text(1, "Hi"),)),
            MessageView.BASIC,
        )
    writer = _writer(store)
    outcomes = await writer.run_batch(
        [
            writer.write(
                AssistantUpsert(
                    app_id=app.id, execution_id=ok, items=(_text(1, " there", offset=2),)
                )
            ),
            # Past the end of the stored text ("Hi", 2 characters): refused.
            writer.write(
                AssistantUpsert(
                    app_id=app.id, execution_id=refused, items=(_text(1, "!", offset=5),)
                )
            ),
            writer.write(
                AssistantUpsert(app_id=app.id, execution_id=fine, items=(_text(2, "Next."),))
            ),
        ]
    )
    assert isinstance(outcomes[1], FailedPrecondition)
    assert outcomes[1].field == "items[0].message.offset"
    first, third = outcomes[0], outcomes[2]
    assert isinstance(first, UpsertResult) and isinstance(third, UpsertResult)
    assert first.changed and first.message.version == 2
    assert third.changed and third.message.version == 2
    assert (await store.get_message_by_execution(ok)).flow[0].text == "Hi there"
    untouched = await store.get_message_by_execution(refused)
    assert untouched.version == 1 and [i.text for i in untouched.flow] == ["Hi"]
    assert [i.text for i in (await store.get_message_by_execution(fine)).flow] == ["Hi", "Next."]


async def test_batches_over_the_same_apps_in_opposite_orders_do_not_deadlock(
    pg_url: str,
) -> None:
    engine = db.create_engine(pg_url)
    store = MessageStore(engine, HybridClock(), writer_pool_size=4, write_batches=2)
    try:
        one = await store.create_app("batch", f"d1-{uuid.uuid4().hex[:8]}")
        two = await store.create_app("batch", f"d2-{uuid.uuid4().hex[:8]}")
        writer = _writer(store)

        def pair(first: str, second: str, tag: str) -> list[Write]:
            return [
                writer.write(
                    AssistantUpsert(app_id=app, execution_id=f"{app}-{tag}", items=(_text(1, "a"),))
                )
                for app in (first, second)
            ]

        retried = _metric("appforge_chat_write_batches_retried_total")
        for n in range(25):
            # Each batch holds the first app's row until it commits; unsorted, the two
            # would wait on each other.
            results = await asyncio.wait_for(
                asyncio.gather(
                    writer.run_batch(pair(one.id, two.id, f"x{n}")),
                    writer.run_batch(pair(two.id, one.id, f"y{n}")),
                ),
                timeout=20,
            )
            for outcome in (o for batch in results for o in batch):
                assert isinstance(outcome, UpsertResult) and outcome.changed
        # No batch lost a lock race (a deadlock is rolled back and sent again write by write).
        assert _metric("appforge_chat_write_batches_retried_total") == retried
    finally:
        await store.close()
        await engine.dispose()
