"""Invariant 2: seq 1, 2, 3… per execution and strictly increasing stamps, without sleeping."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from appforge.services.builder.store import ExecutionStore
from appforge.services.common import db
from appforge.services.common.errors import NotFound
from tests.integration.conftest import NewExecution

NOW = 1_800_000_000_000_000


async def test_a_frozen_wall_clock_still_gives_strictly_increasing_stamps(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    pairs = [p for _ in range(50) for p in await builder_store.allocate(execution_id, 2, NOW)]
    assert [seq for seq, _ in pairs] == list(range(1, 101))
    assert [stamp for _, stamp in pairs] == list(range(NOW, NOW + 100))


async def test_a_clock_stepping_back_never_repeats_a_stamp(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    first = await builder_store.allocate(execution_id, 3, NOW)
    earlier = await builder_store.allocate(execution_id, 2, NOW - 60_000_000)  # a minute back
    later = await builder_store.allocate(execution_id, 1, NOW + 5_000_000)
    stamps = [s for _, s in (*first, *earlier, *later)]
    assert stamps == [NOW, NOW + 1, NOW + 2, NOW + 3, NOW + 4, NOW + 5_000_000]
    assert [q for q, _ in (*first, *earlier, *later)] == [1, 2, 3, 4, 5, 6]


async def test_a_tools_item_and_the_text_right_after_get_their_own_stamps(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    # The old system's bug: a tools item and a message item of one turn shared one
    # second-resolution timestamp. One allocation here, two distinct stamps.
    execution_id = await new_execution()
    (tools_seq, tools_stamp), (text_seq, text_stamp) = await builder_store.allocate(
        execution_id, 2, NOW
    )
    assert (tools_seq, text_seq) == (1, 2)
    assert text_stamp > tools_stamp


async def test_concurrent_allocations_never_share_a_seq_or_stamp(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    batches = await asyncio.gather(
        *(builder_store.allocate(execution_id, 3, NOW) for _ in range(40))
    )
    pairs = sorted(p for batch in batches for p in batch)
    assert [seq for seq, _ in pairs] == list(range(1, 121))
    stamps = [stamp for _, stamp in pairs]
    assert stamps == sorted(stamps) and len(set(stamps)) == 120


async def test_a_restarted_builder_continues_the_sequence(
    builder_store: ExecutionStore, new_execution: NewExecution, backend: tuple[str, str, str | None]
) -> None:
    execution_id = await new_execution()
    await builder_store.allocate(execution_id, 4, NOW)
    engine = db.create_engine(backend[1])  # another process's view of the same database
    try:
        after_restart = await ExecutionStore(engine).allocate(execution_id, 1, NOW - 1)
    finally:
        await engine.dispose()
    assert after_restart == [(5, NOW + 4)]


async def test_allocating_for_an_unknown_execution_is_not_found(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    with pytest.raises(NotFound):
        await builder_store.allocate(str(uuid.uuid4()), 1, NOW)
    with pytest.raises(ValueError):
        await builder_store.allocate(await new_execution(), 0, NOW)
