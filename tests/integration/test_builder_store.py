"""The builder's tool calls, app versions and deploy-once key, on both backends."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from appforge.services.builder.store import ExecutionStore
from appforge.services.common.errors import NotFound
from appforge.services.common.flow import ToolStatus
from tests.integration.conftest import NewExecution

NOW = 1_800_000_000_000_000
CALLS = [("c1", "write_file", '{"path":"index.html"}'), ("c2", "write_file", '{"path":"app.js"}')]


async def test_calls_move_forward_only(
    builder_store: ExecutionStore, new_execution: NewExecution
) -> None:
    execution_id = await new_execution()
    await builder_store.add_calls(execution_id, 1, CALLS, deadline_us=NOW + 60_000_000, now_us=NOW)
    await builder_store.add_calls(
        execution_id, 1, CALLS, deadline_us=NOW + 60_000_000, now_us=NOW
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
    await builder_store.add_calls(execution_id, 1, CALLS, deadline_us=NOW, now_us=NOW)
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
    await builder_store.add_calls(execution_id, 1, CALLS, deadline_us=NOW + 10, now_us=NOW)
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
