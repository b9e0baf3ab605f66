"""Deltas, not snapshots (invariant 7), on both backends.

A BASIC watcher gets each message once whole and then what each write changed; applying
those deltas (`appforge.api.chat.v1.deltas`, as any client does) must rebuild, byte for
byte, the message `GetMessage` returns, whatever the writes: appends at offsets, replays,
reordered tool updates, refused appends. Resuming from any cursor of a run ends in the same
state; an append that does not continue the text writes nothing; a watcher that stops
reading cannot make the server buffer without bound.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import random
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc, deltas
from appforge.api.flow.v1 import flow_pb2
from appforge.services.chat import metrics
from appforge.services.common import keys
from appforge.services.common.bus import Subscription
from appforge.services.common.settings import Settings
from tests.helpers import table_counts, watching
from tests.integration.conftest import ChatHandle, NewApp, start_chat, stop_chat

SEEDS = range(6)
WORDS = ("Planning", "the", "calculator", "app,", "writing", "index.html", "and", "styles.")
TERMINAL = (
    flow_pb2.TOOL_STATUS_SUCCEEDED,
    flow_pb2.TOOL_STATUS_FAILED,
    flow_pb2.TOOL_STATUS_TIMED_OUT,
    flow_pb2.TOOL_STATUS_CANCELLED,
)


def text_piece(seq: int, text: str, offset: int) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, message=flow_pb2.TextPart(text=text, offset=offset))


def tools(seq: int, *calls: flow_pb2.ToolCall) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, tools=flow_pb2.ToolBatch(calls=list(calls)))


def random_writes(seed: int) -> list[chat_pb2.UpsertAssistantMessageRequest]:
    """What a streaming writer (and a flaky network) sends for one execution: text in pieces
    at their offsets (some replayed, some sent early and refused, some as whole prefixes),
    tool calls along their path with late and repeated updates, status and metadata."""
    rng = random.Random(seed)
    writes: list[tuple[list[flow_pb2.FlowItem], dict[str, Any]]] = []
    for seq in range(1, rng.randint(4, 9)):
        if rng.random() < 0.55:
            full = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
            cuts = sorted({0, len(full), *(rng.randint(1, len(full)) for _ in range(4))})
            pieces = [(a, full[a:b]) for a, b in itertools.pairwise(cuts)]
            for n, (offset, piece) in enumerate(pieces):
                if n + 1 < len(pieces) and rng.random() < 0.2:  # early: refused, then resent
                    later_offset, later = pieces[n + 1]
                    writes.append(([text_piece(seq, later, later_offset)], {}))
                writes.append(([text_piece(seq, piece, offset)], {}))
                if rng.random() < 0.25:  # a replay of what was just sent
                    writes.append(([text_piece(seq, piece, offset)], {}))
            if rng.random() < 0.3:  # the whole text again, as an older writer sends it
                writes.append(([text_piece(seq, full, 0)], {}))
        else:
            ids = [f"call-{seq}-{n}" for n in range(rng.randint(1, 3))]
            first = [
                flow_pb2.ToolCall(call_id=c, name="write_file", arguments_json="{}") for c in ids
            ]
            writes.append(([tools(seq, *first)], {}))
            updates: list[flow_pb2.ToolCall] = []
            for call_id in ids:
                end = rng.choice(TERMINAL)
                updates.append(
                    flow_pb2.ToolCall(call_id=call_id, status=flow_pb2.TOOL_STATUS_STREAMING)
                )
                updates.append(
                    flow_pb2.ToolCall(call_id=call_id, status=end, result_json=f'"{call_id}"')
                )
            rng.shuffle(updates)  # a late STREAMING after the end changes nothing
            writes.extend(([tools(seq, update)], {}) for update in updates)
        if rng.random() < 0.3:
            writes.append(([], {"status": chat_pb2.MESSAGE_STATUS_PROCESSING, "progress": seq}))
    writes.append(([], {"status": chat_pb2.MESSAGE_STATUS_COMPLETED, "deployment_status": "x"}))
    return [_request(items, extra) for items, extra in writes]


def _request(
    items: list[flow_pb2.FlowItem], extra: dict[str, Any]
) -> chat_pb2.UpsertAssistantMessageRequest:
    request = chat_pb2.UpsertAssistantMessageRequest(items=items)
    status = extra.pop("status", None)
    if isinstance(status, int):
        request.status = status  # type: ignore[assignment]
    if extra:
        request.metadata.update(extra)
    return request


def wire(message: chat_pb2.ChatMessage) -> bytes:
    return message.SerializeToString(deterministic=True)


async def write_all(chat: ChatHandle, app_id: str, execution_id: str, seed: int) -> tuple[int, int]:
    """Send the seed's writes in order; returns (applied, refused)."""
    applied = refused = 0
    for request in random_writes(seed):
        request.app_id, request.execution_id = app_id, execution_id
        try:
            await chat.stub.UpsertAssistantMessage(request)
            applied += 1
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()
            refused += 1
    return applied, refused


async def full(chat: ChatHandle, execution_id: str) -> chat_pb2.ChatMessage:
    return await chat.stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
    )


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed-{s}")
async def test_applied_deltas_rebuild_the_message_byte_for_byte(
    chat: ChatHandle, new_app: NewApp, seed: int
) -> None:
    app = await new_app()
    execution_id = str(uuid.uuid4())
    async with (
        watching(chat.stub, app.id) as basic,
        watching(chat.stub, app.id, view=chat_pb2.MESSAGE_VIEW_FULL) as whole,
    ):
        applied, _ = await write_all(chat, app.id, execution_id, seed)
        final = await full(chat, execution_id)
        done = await basic.until(lambda e: e.message.version == final.version)
        shown = await whole.until(lambda e: e.message.version == final.version)
    assert applied and final.version <= applied
    assert wire(done.message) == wire(final)
    assert wire(shown.message) == wire(final)
    assert final.content == deltas.content_of(final) and final.content
    # After its snapshot, the BASIC stream carried this message as deltas only.
    kinds = [e.WhichOneof("change") for e in basic.raw if _message_id(e) == final.id]
    assert kinds[0] == "message" and set(kinds[1:]) <= {"delta"} and len(kinds) > 1
    assert all(e.WhichOneof("change") == "message" for e in whole.raw)
    # After the snapshot (whatever version it caught), every later version once, in order.
    versions = [_version(e) for e in basic.raw if _message_id(e) == final.id]
    assert versions == list(range(versions[0], final.version + 1))


def _message_id(event: chat_pb2.MessageEvent) -> str:
    return event.delta.message_id if event.HasField("delta") else event.message.id


def _version(event: chat_pb2.MessageEvent) -> int:
    return event.delta.version if event.HasField("delta") else event.message.version


async def test_resuming_from_every_cursor_ends_in_the_same_state(
    chat: ChatHandle, new_app: NewApp
) -> None:
    app = await new_app()
    execution_ids = [str(uuid.uuid4()) for _ in range(2)]
    # What a client holds after each event: the whole messages the queue hands out.
    held: dict[str, chat_pb2.ChatMessage] = {}
    states: dict[int, dict[str, chat_pb2.ChatMessage]] = {0: {}}
    async with watching(chat.stub, app.id) as watcher:
        for n, execution_id in enumerate(execution_ids):
            await write_all(chat, app.id, execution_id, seed=100 + n)
        finals = [await full(chat, e) for e in execution_ids]
        last = max(m.cursor for m in finals)
        while watcher.last_cursor < last:
            event = await watcher.next()
            held[event.message.id] = event.message
            states[event.cursor] = dict(held)
    expected = {m.id: wire(m) for m in finals}
    for cursor, state in states.items():
        known = deltas.Messages()
        known.by_id = copy.deepcopy(state)
        async with watching(chat.stub, app.id, after_cursor=cursor, known=known) as resumed:
            if cursor < last:
                await resumed.until(lambda e: e.cursor >= last)
            got = {i: wire(m) for i, m in resumed.messages.by_id.items()}
        assert got == expected, f"resumed after cursor {cursor}"


@pytest.mark.parametrize(
    ("piece", "field"),
    [
        pytest.param(text_piece(1, "lo", 4), "items[0].message.offset", id="past-the-end"),
        pytest.param(text_piece(1, "Jelly", 0), "items[0].message.text", id="rewrites-it"),
        pytest.param(text_piece(2, "new", 1), "items[0].message.offset", id="new-not-at-0"),
    ],
)
async def test_an_append_that_does_not_continue_the_text_writes_nothing(
    chat: ChatHandle, new_app: NewApp, piece: flow_pb2.FlowItem, field: str
) -> None:
    app = await new_app()
    execution_id = str(uuid.uuid4())
    request = chat_pb2.UpsertAssistantMessageRequest(app_id=app.id, execution_id=execution_id)
    first = copy.deepcopy(request)
    first.items.append(text_piece(1, "Hel", 0))
    await chat.stub.UpsertAssistantMessage(first)
    before, counts = await full(chat, execution_id), await table_counts(chat.runtime.engine)
    bad = copy.deepcopy(request)
    bad.items.extend([piece, text_piece(1, "lo", 3)])  # the good append after it goes too
    bad.status = chat_pb2.MESSAGE_STATUS_COMPLETED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chat.stub.UpsertAssistantMessage(bad)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert field in (raised.value.details() or "")
    assert wire(await full(chat, execution_id)) == wire(before)
    assert await table_counts(chat.runtime.engine) == counts


async def test_views_of_a_reply(chat: ChatHandle, new_app: NewApp) -> None:
    app = await new_app()
    execution_id = str(uuid.uuid4())
    request = chat_pb2.UpsertAssistantMessageRequest(
        app_id=app.id, execution_id=execution_id, items=[text_piece(1, "Hello", 0)]
    )
    basic = await chat.stub.UpsertAssistantMessage(request)
    assert (basic.version, basic.content, list(basic.flow)) == (1, "", [])
    assert basic.id and basic.execution_id == execution_id and basic.cursor
    assert basic.role == chat_pb2.ROLE_ASSISTANT and basic.HasField("updated_at")
    request.items[0].CopyFrom(text_piece(1, " world", 5))
    request.view = chat_pb2.MESSAGE_VIEW_FULL
    whole = await chat.stub.UpsertAssistantMessage(request)
    assert (whole.version, whole.content) == (2, "Hello world")
    assert wire(whole) == wire(await full(chat, execution_id))
    request.view = 7  # type: ignore[assignment]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chat.stub.UpsertAssistantMessage(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "view" in (raised.value.details() or "")


async def test_an_append_costs_what_it_adds(chat: ChatHandle, new_app: NewApp) -> None:
    """The event for one appended word is as small with a long message as with a short one."""
    app = await new_app()
    execution_id = str(uuid.uuid4())
    base = chat_pb2.UpsertAssistantMessageRequest(app_id=app.id, execution_id=execution_id)
    text = ""
    async with watching(chat.stub, app.id) as watcher:
        for seq in range(1, 201):
            request = copy.deepcopy(base)
            request.items.append(text_piece(seq, "x" * 200, 0))
            await chat.stub.UpsertAssistantMessage(request)
        for _ in range(20):
            request = copy.deepcopy(base)
            request.items.append(text_piece(200, " word", len(text) + 200))
            text += " word"
            reply = await chat.stub.UpsertAssistantMessage(request)
            assert reply.ByteSize() < 300  # BASIC: no flow, no content
        await watcher.until(lambda e: e.message.version == 220)
    sizes = [e.ByteSize() for e in watcher.raw if e.HasField("delta")]
    appends = sizes[-20:]
    # Ids, version, stamp and the five characters: the same few bytes every time.
    assert len(sizes) >= 200 and max(appends) < 200 and max(appends) - min(appends) <= 2
    assert len(wire(await full(chat, execution_id))) > 200 * 200


async def test_a_watcher_that_stops_reading_is_caught_up_in_snapshots(
    backend: tuple[str, str, str | None],
) -> None:
    """It cannot make the server buffer more than its bound, other watchers do not wait for
    it, and once it reads again it holds the exact messages."""
    handle = await start_chat(
        *backend, Settings(watch_poll_interval=2.0, shutdown_grace=0.5, watch_buffer=8)
    )
    try:
        app = await handle.stub.CreateApp(
            chat_pb2.CreateAppRequest(team_id="t", name=f"slow-{uuid.uuid4().hex[:8]}")
        )
        execution_id = str(uuid.uuid4())
        resyncs = metrics.WATCH_RESYNCS._value.get()
        # Its own connection, with the HTTP/2 window left at 64 KiB (no BDP probing), so
        # what the server may send ahead of its reads is small and known.
        slow_channel = grpc.aio.insecure_channel(
            handle.address, options=[("grpc.http2.bdp_probe", 0)]
        )
        slow = chat_pb2_grpc.ChatServiceStub(slow_channel).WatchApp(
            chat_pb2.WatchAppRequest(app_id=app.id)
        )
        async with watching(handle.stub, app.id) as fast:
            await _subscribed(handle, app.id, 2)
            backlogs: list[int] = []
            for seq in range(1, 101):  # 100 events of 16 KiB: more than transports buffer
                request = chat_pb2.UpsertAssistantMessageRequest(
                    app_id=app.id,
                    execution_id=execution_id,
                    items=[text_piece(seq, "y" * 16384, 0)],
                )
                await handle.stub.UpsertAssistantMessage(request)
                backlogs.extend(_backlogs(handle, app.id))
            final = await handle.stub.GetMessageByExecution(
                chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
            )
            assert wire((await fast.until(lambda e: e.message.version == 100)).message) == wire(
                final
            )
        assert backlogs and max(backlogs) <= 8
        messages = deltas.Messages()
        async for event in slow:
            message = messages.apply(event)
            if message.version == final.version:
                break
        slow.cancel()
        await slow_channel.close(None)
        assert wire(messages.by_id[final.id]) == wire(final)
        assert metrics.WATCH_RESYNCS._value.get() > resyncs
    finally:
        await stop_chat(handle)


def _subscriptions(handle: ChatHandle, app_id: str) -> list[Subscription]:
    fanout = handle.runtime.bus._fanout  # type: ignore[attr-defined]
    return list(fanout._subscribers.get(keys.app_changes_channel(app_id), ()))


def _backlogs(handle: ChatHandle, app_id: str) -> Iterator[int]:
    """The payloads each watcher subscription of the app holds now."""
    for sub in _subscriptions(handle, app_id):
        yield sub.backlog


async def _subscribed(handle: ChatHandle, app_id: str, count: int) -> None:
    """Wait (bounded) until `count` watchers of the app are subscribed."""
    async with asyncio.timeout(10):
        while len(_subscriptions(handle, app_id)) < count:
            await asyncio.sleep(0.01)
