"""ChatService through gRPC, on PostgreSQL + Redis and on the embedded default."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2
from tests.helpers import call, calls_by_id, text_item, tools_item, upsert, watching
from tests.integration.conftest import ChatHandle, NewApp

SUCCEEDED = flow_pb2.TOOL_STATUS_SUCCEEDED
STREAMING = flow_pb2.TOOL_STATUS_STREAMING


async def test_create_and_get_app(chat: ChatHandle) -> None:
    name = f"calc-{uuid.uuid4().hex[:8]}"
    app = await chat.stub.CreateApp(chat_pb2.CreateAppRequest(team_id="t1", name=name))
    assert app.id and app.name == name and app.team_id == "t1"
    assert (await chat.stub.GetApp(chat_pb2.GetAppRequest(app_id=app.id))) == app

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await chat.stub.CreateApp(chat_pb2.CreateAppRequest(team_id="t1", name=name))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    existing = await chat.stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t1", name=name, return_existing=True)
    )
    assert existing == app
    # The same name in another team is another app.
    other = await chat.stub.CreateApp(chat_pb2.CreateAppRequest(team_id="t2", name=name))
    assert other.id != app.id


async def test_post_user_message_is_idempotent_by_request_id(
    chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    request = chat_pb2.PostUserMessageRequest(
        app_id=app.id, content="build a calculator", request_id="r-1"
    )
    first, *twins = await asyncio.gather(*(chat.stub.PostUserMessage(request) for _ in range(10)))
    assert all(t.id == first.id for t in twins)
    assert first.role == chat_pb2.ROLE_USER and first.content == "build a calculator"
    without_key = chat_pb2.PostUserMessageRequest(app_id=app.id, content="again")
    a = await chat.stub.PostUserMessage(without_key)
    b = await chat.stub.PostUserMessage(without_key)
    assert a.id != b.id
    listed = await chat.stub.ListMessages(chat_pb2.ListMessagesRequest(app_id=app.id))
    assert [m.id for m in listed.messages] == [first.id, a.id, b.id]


async def test_first_upsert_creates_later_ones_update_the_same_message(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    first = await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, tools_item(1, call("c1", name="write_file")))
    )
    second = await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, text_item(2, "Wrote index.html"))
    )
    third = await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, tools_item(3, call("c2")), text_item(4, "Done."))
    )
    assert first.id == second.id == third.id
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert third.role == chat_pb2.ROLE_ASSISTANT and third.execution_id == execution_id
    assert [i.seq for i in third.flow] == [1, 2, 3, 4]
    assert third.content == "Wrote index.html\n\nDone."
    by_exec = await chat.stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
    )
    by_id = await chat.stub.GetMessage(chat_pb2.GetMessageRequest(message_id=first.id))
    assert by_exec == by_id == third
    listed = await chat.stub.ListMessages(chat_pb2.ListMessagesRequest(app_id=app.id))
    assert [m.id for m in listed.messages] == [first.id]


async def test_replay_changes_nothing_and_returns_the_same_version(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    request = upsert(
        app.id,
        execution_id,
        tools_item(1, call("c1", STREAMING, name="write_file", arguments_json='{"path":"a"}')),
        text_item(2, "hello"),
        status=chat_pb2.MESSAGE_STATUS_PROCESSING,
        metadata=_struct(step=1),
    )
    first = await chat.stub.UpsertAssistantMessage(request)
    replayed = await chat.stub.UpsertAssistantMessage(request)
    assert replayed == first
    assert replayed.version == 1


async def test_out_of_order_delivery_never_regresses(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    done = call("c1", SUCCEEDED, name="write_file", result_json='{"bytes":10}')
    await chat.stub.UpsertAssistantMessage(
        upsert(
            app.id,
            execution_id,
            tools_item(1, done),
            text_item(2, "All files written"),
            status=chat_pb2.MESSAGE_STATUS_COMPLETED,
        )
    )
    late = await chat.stub.UpsertAssistantMessage(
        upsert(
            app.id,
            execution_id,
            tools_item(1, call("c1", STREAMING)),
            text_item(2, "All"),
            status=chat_pb2.MESSAGE_STATUS_PROCESSING,
        )
    )
    assert calls_by_id(late)["c1"].status == SUCCEEDED
    assert calls_by_id(late)["c1"].result_json == '{"bytes":10}'
    assert late.status == chat_pb2.MESSAGE_STATUS_COMPLETED
    assert late.content == "All files written"
    assert late.version == 1  # the late writes changed nothing

    failed = await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, status=chat_pb2.MESSAGE_STATUS_FAILED)
    )
    assert failed.status == chat_pb2.MESSAGE_STATUS_FAILED and failed.version == 2
    again = await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, status=chat_pb2.MESSAGE_STATUS_COMPLETED)
    )
    assert again.status == chat_pb2.MESSAGE_STATUS_FAILED and again.version == 2


async def test_text_only_grows_and_metadata_merges_key_by_key(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, text_item(1, "Build"), metadata=_struct(a=1, b="x"))
    )
    grown = await chat.stub.UpsertAssistantMessage(
        upsert(
            app.id,
            execution_id,
            text_item(1, "Building the calculator"),
            metadata=_struct(b="y", c=True),
        )
    )
    assert grown.content == "Building the calculator"
    assert dict(grown.metadata) == {"a": 1.0, "b": "y", "c": True}


async def test_tool_calls_of_one_batch_complete_independently(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    ids = [f"c{n}" for n in range(8)]
    await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, tools_item(1, *(call(i) for i in ids)))
    )
    # Every call completes concurrently, each in its own request: none may be lost.
    await asyncio.gather(
        *(
            chat.stub.UpsertAssistantMessage(
                upsert(
                    app.id, execution_id, tools_item(1, call(i, SUCCEEDED, result_json=f'"{i}"'))
                )
            )
            for i in ids
        )
    )
    final = await chat.stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
    )
    batch = final.flow[0].tools.calls
    assert [c.call_id for c in batch] == ids  # batch order kept
    assert all(c.status == SUCCEEDED and c.result_json == f'"{c.call_id}"' for c in batch)
    assert final.version == 1 + len(ids)


async def test_concurrent_upserts_on_one_execution_leave_one_message(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    requests = [upsert(app.id, execution_id, text_item(n, f"part {n}")) for n in range(1, 61)]
    requests += requests[::3]  # replays mixed in
    results = await asyncio.gather(*(chat.stub.UpsertAssistantMessage(r) for r in requests))
    assert len({r.id for r in results}) == 1
    final = await chat.stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
    )
    assert [i.seq for i in final.flow] == list(range(1, 61))
    assert final.version == 60
    stamps = [i.timestamp.ToMicroseconds() for i in final.flow]
    assert len(set(stamps)) == 60  # chat stamped the unstamped items, never twice the same


async def test_sender_stamps_are_kept(chat: ChatHandle, new_app: NewApp, execution_id: str) -> None:
    app = await new_app()
    item = text_item(1, "x")
    item.timestamp.FromMicroseconds(1_800_000_000_000_001)
    message = await chat.stub.UpsertAssistantMessage(upsert(app.id, execution_id, item))
    assert message.flow[0].timestamp.ToMicroseconds() == 1_800_000_000_000_001


async def test_list_messages_pages_in_a_stable_order(chat: ChatHandle, new_app: NewApp) -> None:
    app = await new_app()
    posted = [
        (
            await chat.stub.PostUserMessage(
                chat_pb2.PostUserMessageRequest(app_id=app.id, content=f"m{n}")
            )
        ).id
        for n in range(7)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await chat.stub.ListMessages(
            chat_pb2.ListMessagesRequest(app_id=app.id, page_size=3, page_token=token)
        )
        seen += [m.id for m in page.messages]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == posted and pages == 3


async def test_watch_replays_then_streams_live(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    user = await chat.stub.PostUserMessage(
        chat_pb2.PostUserMessageRequest(app_id=app.id, content="hi")
    )
    async with watching(chat.stub, app.id) as watcher:
        replayed = await watcher.next()
        assert replayed.message.id == user.id and replayed.cursor == 1
        await chat.stub.UpsertAssistantMessage(upsert(app.id, execution_id, text_item(1, "Hello")))
        live = await watcher.next()
        assert live.cursor == 2 and live.message.execution_id == execution_id
        assert live.message.content == "Hello"


async def test_watcher_reconnecting_with_its_cursor_misses_nothing(
    chat: ChatHandle, new_app: NewApp, execution_id: str
) -> None:
    app = await new_app()
    async with watching(chat.stub, app.id) as watcher:
        await chat.stub.UpsertAssistantMessage(upsert(app.id, execution_id, text_item(1, "one")))
        await watcher.next()
        last_cursor = watcher.last_cursor
    # While away: the execution's message changes twice and a user message arrives.
    await chat.stub.UpsertAssistantMessage(upsert(app.id, execution_id, text_item(2, "two")))
    await chat.stub.UpsertAssistantMessage(
        upsert(app.id, execution_id, status=chat_pb2.MESSAGE_STATUS_COMPLETED)
    )
    user = await chat.stub.PostUserMessage(
        chat_pb2.PostUserMessageRequest(app_id=app.id, content="more")
    )
    async with watching(chat.stub, app.id, after_cursor=last_cursor) as again:
        first, second = await again.next(), await again.next()
        assistant = first.message
        assert assistant.execution_id == execution_id
        assert assistant.status == chat_pb2.MESSAGE_STATUS_COMPLETED
        assert assistant.content == "one\n\ntwo"
        assert second.message.id == user.id
        assert first.cursor < second.cursor
        assert again.events.empty()


async def test_watch_of_an_unknown_app_is_not_found(chat: ChatHandle) -> None:
    stream = chat.stub.WatchApp(chat_pb2.WatchAppRequest(app_id=str(uuid.uuid4())))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stream:
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _struct(**values: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def test_events_published_out_of_order_reach_watchers_in_order_without_a_db_read(
    chat: ChatHandle, new_app: NewApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appforge.services.common import keys

    app = await new_app()
    store = chat.runtime.service.store
    reads: list[int] = []
    read = {0: asyncio.Event(), 3: asyncio.Event()}
    real_changed_after = store.changed_after

    async def counted(app_id: str, after: int, limit: int) -> Any:
        if app_id == app.id:
            reads.append(after)
        page = await real_changed_after(app_id, after, limit)
        # Set once the read is done, so the test never ends (and stops the service) while a
        # read is in flight: cancelling an aiosqlite query mid-way can hang its connection.
        if app_id == app.id and after in read:
            read[after].set()
        return page

    monkeypatch.setattr(store, "changed_after", counted)

    def event(cursor: int) -> bytes:
        message = chat_pb2.ChatMessage(id=f"m{cursor}", app_id=app.id, execution_id=f"e{cursor}")
        return chat_pb2.MessageEvent(cursor=cursor, message=message).SerializeToString()

    channel = keys.app_changes_channel(app.id)
    async with watching(chat.stub, app.id) as watcher:
        # The first read is the replay; live events follow once it is done.
        await asyncio.wait_for(read[0].wait(), 10)
        for cursor in (3, 1, 2):  # committed 1, 2, 3; published 3 first
            await chat.runtime.bus.publish(channel, event(cursor))
        got = [(await watcher.next()).cursor for _ in range(3)]
        assert got == [1, 2, 3]
        assert reads == [0]  # no catch-up: the gap filled from the bus
        await chat.runtime.bus.publish(channel, event(5))  # 4 never comes
        await asyncio.wait_for(read[3].wait(), 10)  # 5 was held, then a database read
        assert reads == [0, 3]
        assert watcher.events.empty()  # the database has nothing after 3: 5 was not sent
