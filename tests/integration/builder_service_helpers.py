"""What the builder-service modules share: a stock in-process builder, Build requests, and
checks on the one assistant message a build writes."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from tests.integration.builder_fixtures import BuilderHandle, running_builder
from tests.integration.conftest import ChatHandle

NOW = 1_800_000_000_000_000


@pytest.fixture
async def builder(
    backend: tuple[str, str, str | None], chat: ChatHandle, tmp_path: Path
) -> AsyncIterator[BuilderHandle]:
    async with running_builder(
        database_url=backend[1], chat_address=chat.address, tmp=tmp_path
    ) as handle:
        yield handle


def build(app_id: str, prompt: str = "build a calculator", **kw: str) -> builder_pb2.BuildRequest:
    return builder_pb2.BuildRequest(app_id=app_id, prompt=prompt, **kw)


def stamps(message: chat_pb2.ChatMessage) -> list[int]:
    return [item.timestamp.ToMicroseconds() for item in message.flow]


def assert_ordered(message: chat_pb2.ChatMessage) -> None:
    """seq 1..N and strictly increasing stamps (invariant 2)."""
    assert [item.seq for item in message.flow] == list(range(1, len(message.flow) + 1))
    times = stamps(message)
    assert all(a < b for a, b in itertools.pairwise(times)), times


async def assistant_messages(chat: ChatHandle, app_id: str) -> list[chat_pb2.ChatMessage]:
    page = await chat.stub.ListMessages(chat_pb2.ListMessagesRequest(app_id=app_id))
    return [m for m in page.messages if m.role == chat_pb2.ROLE_ASSISTANT]
