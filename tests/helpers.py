"""Builders and readers shared by the integration and e2e suites."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
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
    """Reads a WatchApp stream in the background into a queue."""

    def __init__(
        self, stub: chat_pb2_grpc.ChatServiceAsyncStub, app_id: str, after_cursor: int = 0
    ):
        self.call = stub.WatchApp(
            chat_pb2.WatchAppRequest(app_id=app_id, after_cursor=after_cursor)
        )
        self.events: asyncio.Queue[chat_pb2.MessageEvent] = asyncio.Queue()
        self.last_cursor = after_cursor
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            async for event in self.call:
                self.events.put_nowait(event)

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
    stub: chat_pb2_grpc.ChatServiceAsyncStub, app_id: str, after_cursor: int = 0
) -> AsyncIterator[Watcher]:
    watcher = Watcher(stub, app_id, after_cursor)
    try:
        yield watcher
    finally:
        await watcher.close()
