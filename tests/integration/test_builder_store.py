"""The builder's tool calls, app versions and deploy-once key, on both backends."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from appforge.services.builder.domain import ExecutionStatus
from appforge.services.builder.store import ExecutionStore
from appforge.services.common.errors import AlreadyExists, NotFound
from appforge.services.common.flow import ToolStatus
from tests.integration.conftest import EXECUTION_CREATED_US, NewExecution

NOW = 1_800_000_000_000_000
CALLS = [("c1", "write_file", '{"path":"index.html"}'), ("c2", "write_file", '{"path":"app.js"}')]


async def test_calls_move_forward_only(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    await builder_store.add_calls(
        execution_id, 1, CALLS, stamp_us=NOW, deadline_us=NOW + 60_000_000, now_us=NOW
    )
    await builder_store.add_calls(
        execution_id, 1, CALLS, stamp_us=NOW, deadline_us=NOW + 60_000_000, now_us=NOW
    )  # replay
    assert await builder_store.start_call(execution_id, "c1", NOW)
    assert not await builder_store.start_call(execution_id, "c1", NOW)  # already streaming
    assert await builder_store.finish_call(
        execution_id, "c1", ToolStatus.SUCCEEDED, result_json='{"ok":1}', now_us=NOW
    )
    assert not await builder_store.start_call(
        execution_id, "c1", NOW
    )  # a late streaming changes nothing
    assert not await builder_store.finish_call(
        execution_id, "c1", ToolStatus.FAILED, error="late", now_us=NOW
    )
    calls = await builder_store.calls(execution_id)
    assert [(c.call_id, c.position, c.status) for c in calls] == [
        ("c1", 0, ToolStatus.SUCCEEDED),
        ("c2", 1, ToolStatus.PENDING),
    ]
    assert calls[0].result_json == '{"ok":1}' and calls[0].error == ""
    with pytest.raises(ValueError):
        await builder_store.finish_call(execution_id, "c2", ToolStatus.STREAMING, now_us=NOW)


async def test_the_sweeper_and_the_builder_never_both_finish_a_call(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    await builder_store.add_calls(execution_id, 1, CALLS, stamp_us=NOW, deadline_us=NOW, now_us=NOW)
    await builder_store.start_call(execution_id, "c1", NOW)
    swept, finished = await asyncio.gather(
        builder_store.time_out_expired_calls(NOW + 1),
        builder_store.finish_call(execution_id, "c1", ToolStatus.SUCCEEDED, now_us=NOW + 1),
    )
    final = {c.call_id: c.status for c in await builder_store.calls(execution_id)}
    swept_ids = {c.call_id for c in swept if c.execution_id == execution_id}
    assert final["c2"] is ToolStatus.TIMED_OUT and "c2" in swept_ids
    # c1 ended exactly once: either the builder's success or the sweeper's timeout.
    assert (finished and final["c1"] is ToolStatus.SUCCEEDED and "c1" not in swept_ids) or (
        not finished and final["c1"] is ToolStatus.TIMED_OUT and "c1" in swept_ids
    )
    assert [
        c
        for c in await builder_store.time_out_expired_calls(NOW + 2)
        if c.execution_id == execution_id
    ] == []


async def test_calls_before_their_deadline_are_left_alone(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    await builder_store.add_calls(
        execution_id, 1, CALLS, stamp_us=NOW, deadline_us=NOW + 10, now_us=NOW
    )
    assert [
        c
        for c in await builder_store.time_out_expired_calls(NOW + 5)
        if c.execution_id == execution_id
    ] == []
    timed_out = [
        c
        for c in await builder_store.time_out_expired_calls(NOW + 11)
        if c.execution_id == execution_id
    ]
    assert {c.call_id for c in timed_out} == {"c1", "c2"}
    assert all(c.status is ToolStatus.TIMED_OUT and "deadline" in c.error for c in timed_out)


async def test_an_execution_has_one_version_and_deploys_once(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    files = [("index.html", b"<p>1</p>"), ("app.js", b"1+1")]
    version_id = await builder_store.save_version(execution_id, "app", files, NOW)
    assert (
        await builder_store.save_version(execution_id, "app", [("other", b"x")], NOW) == version_id
    )
    version = await builder_store.version(version_id)
    assert version.files == (("app.js", b"1+1"), ("index.html", b"<p>1</p>"))
    assert (version.app_id, version.execution_id) == ("app", execution_id)
    claims = await asyncio.gather(
        *(builder_store.claim_deploy(execution_id, version_id, NOW) for _ in range(20))
    )
    assert claims.count(True) == 1
    await builder_store.record_deployment(execution_id, "deployment-1")
    with pytest.raises(NotFound):
        await builder_store.version(str(uuid.uuid4()))


async def test_a_timed_out_call_ends_its_execution_and_cancels_the_rest(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    await builder_store.add_calls(
        execution_id, 1, CALLS[:1], stamp_us=NOW, deadline_us=NOW, now_us=NOW
    )
    await builder_store.add_calls(
        execution_id, 2, CALLS[1:], stamp_us=NOW + 1, deadline_us=NOW + 10**9, now_us=NOW
    )
    swept = await builder_store.time_out_expired_calls(NOW + 1)
    assert [c.call_id for c in swept if c.execution_id == execution_id] == ["c1"]
    execution = await builder_store.get(execution_id)
    assert execution.status is ExecutionStatus.TIMED_OUT
    assert "c1 (write_file) passed its deadline" in execution.error
    final = {c.call_id: (c.status, c.error) for c in await builder_store.calls(execution_id)}
    assert final["c1"][0] is ToolStatus.TIMED_OUT
    assert final["c2"][0] is ToolStatus.CANCELLED and "execution ended" in final["c2"][1]
    assert (await builder_store.calls(execution_id))[1].stamp_us == NOW + 1


async def test_the_first_end_of_an_execution_wins(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    await builder_store.add_calls(
        execution_id, 1, CALLS, stamp_us=NOW, deadline_us=NOW + 10**9, now_us=NOW
    )
    await builder_store.finish_call(execution_id, "c1", ToolStatus.SUCCEEDED, now_us=NOW)
    ends = await asyncio.gather(
        builder_store.finish(
            execution_id, ExecutionStatus.CANCELLED, error="user", now_us=NOW, notice_due_us=NOW
        ),
        builder_store.finish(
            execution_id, ExecutionStatus.SUCCEEDED, now_us=NOW, notice_due_us=NOW
        ),
    )
    assert sorted(ends) == [False, True]
    execution = await builder_store.get(execution_id)
    calls = {c.call_id: c.status for c in await builder_store.calls(execution_id)}
    assert calls["c1"] is ToolStatus.SUCCEEDED  # a finished call keeps its end
    if execution.status is ExecutionStatus.CANCELLED:
        assert calls["c2"] is ToolStatus.CANCELLED
    else:
        assert execution.status is ExecutionStatus.SUCCEEDED


async def test_one_execution_per_user_message(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    first = await new_execution()
    with pytest.raises(AlreadyExists, match=first) as caught:
        await builder_store.create(
            execution_id=str(uuid.uuid4()),
            app_id="app",
            model="scripted",
            prompt="again",
            user_message_id=f"m-{first}",
            owner="builder-2",
            now_us=NOW,
        )
    assert caught.value.field == "user_message_id"


async def test_executions_of_a_silent_builder_are_failed_once(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    alive, dead = await new_execution(), await new_execution()
    created = EXECUTION_CREATED_US
    assert await builder_store.heartbeat("builder-1", [alive], created + 20) == {alive}
    assert await builder_store.heartbeat("builder-2", [alive], created + 20) == set()
    await builder_store.add_calls(dead, 1, CALLS, stamp_us=NOW, deadline_us=NOW + 10**9, now_us=NOW)
    results = await asyncio.gather(
        *(
            builder_store.fail_abandoned(
                created + 30, stale_before_us=created + 10, error="the builder stopped"
            )
            for _ in range(3)
        )
    )
    failed = [i for ids in results for i in ids if i in (alive, dead)]
    assert failed == [dead]
    execution = await builder_store.get(dead)
    assert execution.status is ExecutionStatus.FAILED and execution.error == "the builder stopped"
    assert {c.status for c in await builder_store.calls(dead)} == {ToolStatus.CANCELLED}
    assert (await builder_store.get(alive)).status is ExecutionStatus.RUNNING
    assert await builder_store.heartbeat("builder-1", [alive, dead], created + 40) == {alive}


async def test_final_notices_are_claimed_until_acknowledged(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    await builder_store.finish(
        execution_id, ExecutionStatus.FAILED, error="x", now_us=NOW, notice_due_us=NOW + 100
    )

    async def claimed(now_us: int) -> list[str]:
        found = await builder_store.claim_notices(now_us, retry_after_us=1_000)
        return [i for i in found if i == execution_id]

    assert await claimed(NOW + 50) == []  # not due: its finisher is delivering it
    assert await claimed(NOW + 100) == [execution_id]
    assert await claimed(NOW + 200) == []  # claimed by the delivery in progress
    assert await claimed(NOW + 1_100) == [execution_id]  # that delivery failed: again
    await builder_store.mark_notified(execution_id, NOW + 1_200)
    assert await claimed(NOW + 10**9) == []
