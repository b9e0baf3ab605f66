"""Admission control and fair share: a builder runs at most APPFORGE_BUILDER_MAX_RUNNING
executions, a team at most APPFORGE_TEAM_MAX_RUNNING_BUILDS across replicas. A Build past
either is refused at once with RESOURCE_EXHAUSTED, writes nothing (no user message, no
execution, no assistant message), and leaves the builder's other RPCs answering; a slot
freed by an execution that ended is taken by the next Build."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.services.builder.tables import executions
from tests.helpers import table_counts
from tests.integration.builder_fixtures import (
    BuildCall,
    BuilderHandle,
    GatedWorkspace,
    OneBatchModel,
    collect,
    read_started,
    running_builder,
)
from tests.integration.builder_service_helpers import build
from tests.integration.conftest import ChatHandle, NewApp

LIMIT = 3
BURST = 40
WAIT = 20.0


async def _outcome(stream: BuildCall) -> builder_pb2.BuildStarted | grpc.StatusCode:
    try:
        return await read_started(stream)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
        assert "APPFORGE_BUILDER_MAX_RUNNING" in (exc.details() or "")
        return exc.code()


def _gated_builder(
    backend: tuple[str, str, str | None], chat: ChatHandle, tmp: Path, **settings: Any
) -> contextlib.AbstractAsyncContextManager[BuilderHandle]:
    """A builder whose every execution writes one file, its call held at a gate (so it
    stays running until `_finish`)."""
    return running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp,
        models={"scripted": OneBatchModel({"index.html": "<p>hi</p>"})},
        gate=1,
        **settings,
    )


async def _finish(handle: BuilderHandle, stream: BuildCall, execution_id: str) -> None:
    """Open the execution's gate and read its Build stream to its successful end."""
    workspace = handle.workspaces[execution_id]
    assert isinstance(workspace, GatedWorkspace)
    await workspace.arrived.wait()
    workspace.release(["index.html"])
    done = await collect(stream)
    assert done[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED


async def _executions(handle: BuilderHandle) -> int:
    """Rows of the builder's executions table (the database is shared by the session)."""
    async with handle.runtime.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(executions)) or 0)


async def test_builds_past_the_limit_are_refused_at_once_and_write_nothing(
    backend: tuple[str, str, str | None], chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    async with _gated_builder(backend, chat, tmp_path, max_running=LIMIT) as handle:
        apps = [await new_app() for _ in range(BURST)]
        before = await table_counts(chat.runtime.engine)
        executions_before = await _executions(handle)
        streams = [handle.stub.Build(build(app.id)) for app in apps]
        async with asyncio.timeout(WAIT):
            outcomes = await asyncio.gather(*(_outcome(s) for s in streams))
            started = [o for o in outcomes if isinstance(o, builder_pb2.BuildStarted)]
            # While it is full, the builder's other RPCs still answer.
            execution = await handle.stub.GetExecution(
                builder_pb2.GetExecutionRequest(execution_id=started[0].execution_id)
            )
        assert len(started) == LIMIT and outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == (
            BURST - LIMIT
        )
        assert execution.status == builder_pb2.EXECUTION_STATUS_RUNNING
        after = await table_counts(chat.runtime.engine)
        # Each admitted Build wrote its user message and its assistant message; no other did.
        assert after["chat_messages"] - before["chat_messages"] == 2 * LIMIT
        assert await _executions(handle) - executions_before == LIMIT

        # One execution ends: its slot goes to the next Build.
        async with asyncio.timeout(WAIT):
            await _finish(handle, streams[outcomes.index(started[0])], started[0].execution_id)
        later = handle.stub.Build(build(apps[-1].id, prompt="once more"))
        async with asyncio.timeout(WAIT):
            again = await _outcome(later)
        assert isinstance(again, builder_pb2.BuildStarted)
        for stream in streams:
            stream.cancel()
        later.cancel()


async def _app_of(chat: ChatHandle, team_id: str) -> str:
    app = await chat.stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id=team_id, name=f"share-{uuid.uuid4().hex[:8]}")
    )
    return app.id


async def test_a_team_at_its_share_is_refused_and_other_teams_are_not(
    backend: tuple[str, str, str | None], chat: ChatHandle, tmp_path: Path
) -> None:
    team, other = f"team-{uuid.uuid4().hex[:8]}", f"team-{uuid.uuid4().hex[:8]}"
    async with _gated_builder(backend, chat, tmp_path, team_max_running=2) as handle:
        apps = [await _app_of(chat, team) for _ in range(3)]
        first = [handle.stub.Build(build(app)) for app in apps[:2]]
        async with asyncio.timeout(WAIT):
            started = [await read_started(stream) for stream in first]
            before, executions_before = (
                await table_counts(chat.runtime.engine),
                await _executions(handle),
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await read_started(handle.stub.Build(build(apps[2])))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "APPFORGE_TEAM_MAX_RUNNING_BUILDS=2" in (refused.value.details() or "")
        assert team in (refused.value.details() or "")
        after = await table_counts(chat.runtime.engine)  # the two running ones write on
        assert after["chat_messages"] == before["chat_messages"]  # not even a user message
        assert await _executions(handle) == executions_before

        async with asyncio.timeout(WAIT):  # another team is not held back by this one
            await read_started(handle.stub.Build(build(await _app_of(chat, other))))
            await _finish(handle, first[0], started[0].execution_id)
            # One of the team's executions ended: its share has room again.
            await read_started(handle.stub.Build(build(apps[2])))


async def test_two_replicas_cannot_both_take_a_teams_last_slot(
    backend: tuple[str, str, str | None], chat: ChatHandle, tmp_path: Path
) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    async with (
        _gated_builder(backend, chat, tmp_path / "a", team_max_running=1) as one,
        _gated_builder(backend, chat, tmp_path / "b", team_max_running=1) as two,
    ):
        apps = [await _app_of(chat, team) for _ in range(6)]
        streams = [(one if n % 2 else two).stub.Build(build(app)) for n, app in enumerate(apps)]
        async with asyncio.timeout(WAIT):
            outcomes = await asyncio.gather(*(_share_outcome(s) for s in streams))
        assert outcomes.count("started") == 1, outcomes
        for stream in streams:
            stream.cancel()


async def _share_outcome(stream: BuildCall) -> str:
    try:
        await read_started(stream)
        return "started"
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
        return "refused"
