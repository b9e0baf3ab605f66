"""The store applies exactly the domain's rules, on both backends.

On PostgreSQL the merge runs inside the `chat_upsert_assistant` function, on SQLite in
Python through `domain.plan_upsert`. Random write sequences (the convergence generator of
the unit suite) go through the real store and through the pure domain; after every write
both must agree on whether it changed anything, and in the end on the whole flow.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from appforge.cli import installed
from appforge.services.chat.domain import (
    AssistantUpsert,
    MessageStatus,
    MessageView,
    assemble_content,
    assemble_flow,
)
from appforge.services.chat.store import MessageStore
from appforge.services.common import db, migrate
from appforge.services.common.clock import HybridClock
from tests.unit.test_chat_domain_convergence import State, apply, random_scenario

SEEDS = range(12)


@pytest_asyncio.fixture
async def store(backend: tuple[str, str, str | None]) -> AsyncIterator[MessageStore]:
    engine = db.create_engine(backend[1])
    await migrate.upgrade(engine, installed.histories())
    store = MessageStore(engine, HybridClock())
    yield store
    await store.close()
    await engine.dispose()


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed-{s}")
async def test_every_write_matches_the_domain(store: MessageStore, seed: int) -> None:
    app = await store.create_app("diff", f"diff-{uuid.uuid4().hex[:10]}")
    writes, expected = random_scenario(seed)
    order = list(writes)
    random.Random(seed).shuffle(order)
    execution_id = str(uuid.uuid4())
    state = State({}, {})
    version = 0
    for n, write in enumerate(order):
        state, domain_changed = apply(state, write)
        result = await store.upsert_assistant(
            AssistantUpsert(app_id=app.id, execution_id=execution_id, items=tuple(write)),
            MessageView.FULL,
        )
        message, store_changed = result.message, result.changed
        # The first write always changes something: it creates the message.
        assert store_changed == (domain_changed or n == 0), f"write {n}: {write}"
        version += store_changed
        assert message.version == version
        assert message.flow == assemble_flow(state.items, state.calls)
    assert message.flow == expected
    assert message.content == assemble_content(expected)
    stored = await store.get_message_by_execution(execution_id)
    assert stored.flow == expected and stored.version == version


async def test_status_and_metadata_rules_match(store: MessageStore) -> None:
    app = await store.create_app("diff", f"meta-{uuid.uuid4().hex[:10]}")
    execution_id = str(uuid.uuid4())
    steps: list[tuple[MessageStatus | None, dict[str, object], MessageStatus, bool]] = [
        (MessageStatus.PROCESSING, {"a": 1.0}, MessageStatus.PROCESSING, True),
        (MessageStatus.PENDING, {}, MessageStatus.PROCESSING, False),
        (None, {"a": 1.0}, MessageStatus.PROCESSING, False),
        (None, {"b": "x"}, MessageStatus.PROCESSING, True),
        (MessageStatus.COMPLETED, {"a": 2.0}, MessageStatus.COMPLETED, True),
        (MessageStatus.PROCESSING, {}, MessageStatus.COMPLETED, False),
        (MessageStatus.FAILED, {"error": "Deployment timeout"}, MessageStatus.FAILED, True),
        (MessageStatus.COMPLETED, {}, MessageStatus.FAILED, False),
    ]
    for status, metadata, expected_status, expected_changed in steps:
        result = await store.upsert_assistant(
            AssistantUpsert(
                app_id=app.id, execution_id=execution_id, status=status, metadata=metadata
            )
        )
        message, changed = result.message, result.changed
        assert (message.status, changed) == (expected_status, expected_changed)
    assert dict(message.metadata) == {"a": 2.0, "b": "x", "error": "Deployment timeout"}
    assert message.version == 4
