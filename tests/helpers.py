"""Builders and readers shared by the integration and e2e suites."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc, deltas
from appforge.api.flow.v1 import flow_pb2

CHAT_TABLES = ("chat_apps", "chat_messages", "chat_flow_items", "chat_tool_calls")


def text_item(seq: int, text: str, **kwargs: Any) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, message=flow_pb2.TextPart(text=text), **kwargs)


def tools_item(seq: int, *calls: flow_pb2.ToolCall, **kwargs: Any) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, tools=flow_pb2.ToolBatch(calls=list(calls)), **kwargs)


def call(
    call_id: str, status: int = flow_pb2.TOOL_STATUS_PENDING, **kwargs: Any
) -> flow_pb2.ToolCall:
    return flow_pb2.ToolCall(call_id=call_id, status=status, **kwargs)  # type: ignore[arg-type]


def upsert(
    app_id: str, execution_id: str, *items: flow_pb2.FlowItem, **kwargs: Any
) -> chat_pb2.UpsertAssistantMessageRequest:
    """An upsert asking for the FULL reply (these tests read its flow) unless told."""
    kwargs.setdefault("view", chat_pb2.MESSAGE_VIEW_FULL)
    return chat_pb2.UpsertAssistantMessageRequest(
        app_id=app_id, execution_id=execution_id, items=list(items), **kwargs
    )


def calls_by_id(message: chat_pb2.ChatMessage) -> dict[str, flow_pb2.ToolCall]:
    return {
        c.call_id: c for item in message.flow if item.HasField("tools") for c in item.tools.calls
    }


async def table_counts(engine: AsyncEngine) -> dict[str, int]:
    """Row counts of every chat table: what 'nothing was written' is checked against."""
    async with engine.connect() as conn:
        return {
            t: int((await conn.execute(sa.text(f"SELECT count(*) FROM {t}"))).scalar_one())
            for t in CHAT_TABLES
        }


class Watcher:
    """Reads a WatchApp stream in the background into a queue.

    Every event is queued with its whole message: a BASIC stream's deltas are applied the
    way a client does (`appforge.api.chat.v1.deltas.Messages`), so every test that watches
    also checks that deltas rebuild the messages. `raw` keeps the events as received.
    """

    def __init__(
        self,
        stub: chat_pb2_grpc.ChatServiceAsyncStub,
        app_id: str,
        after_cursor: int = 0,
        view: chat_pb2.MessageView.ValueType = chat_pb2.MESSAGE_VIEW_BASIC,
        known: deltas.Messages | None = None,
    ):
        """`known`: the messages the client already holds (when resuming a stream)."""
        self.call = stub.WatchApp(
            chat_pb2.WatchAppRequest(app_id=app_id, after_cursor=after_cursor, view=view)
        )
        self.events: asyncio.Queue[chat_pb2.MessageEvent] = asyncio.Queue()
        self.raw: list[chat_pb2.MessageEvent] = []
        self.messages = known or deltas.Messages()
        self.last_cursor = after_cursor
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            async for event in self.call:
                self.raw.append(event)
                whole = chat_pb2.ChatMessage()
                whole.CopyFrom(self.messages.apply(event))
                self.events.put_nowait(chat_pb2.MessageEvent(cursor=event.cursor, message=whole))

    async def next(self, timeout: float = 10.0) -> chat_pb2.MessageEvent:
        event = await asyncio.wait_for(self.events.get(), timeout)
        self.last_cursor = event.cursor
        return event

    async def until(self, predicate: Any, timeout: float = 10.0) -> chat_pb2.MessageEvent:
        """The first event matching `predicate`, skipping others, within `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(0.0, deadline - loop.time()))
            if predicate(event):
                return event

    async def close(self) -> None:
        self.call.cancel()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def watching(
    stub: chat_pb2_grpc.ChatServiceAsyncStub,
    app_id: str,
    after_cursor: int = 0,
    view: chat_pb2.MessageView.ValueType = chat_pb2.MESSAGE_VIEW_BASIC,
    known: deltas.Messages | None = None,
) -> AsyncIterator[Watcher]:
    watcher = Watcher(stub, app_id, after_cursor, view, known)
    try:
        yield watcher
    finally:
        await watcher.close()
