"""The `openai` model hands each content delta to `on_text` as it arrives, while the
completion is still streaming; what it streamed is never asked for again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from appforge.services.builder.models.base import WRITE_FILE, ModelError
from appforge.services.builder.models.openai import OpenAIConfig, OpenAIModel
from appforge.services.common.errors import Unavailable
from tests.openai_endpoint import (
    INDEX_ARGS,
    PLAN,
    SUMMARY,
    FakeEndpoint,
    Stream,
    call_chunks,
    finish,
    serving,
    split,
    text_chunks,
)

WAIT = 5.0


@pytest.fixture
async def endpoint() -> AsyncIterator[FakeEndpoint]:
    async with serving(FakeEndpoint(replies=[])) as fake:
        yield fake


@pytest.fixture
async def model(endpoint: FakeEndpoint) -> AsyncIterator[OpenAIModel]:
    config = OpenAIConfig(
        base_url=endpoint.base_url, api_key="sk-test", model="gpt-test", initial_backoff=0.001
    )
    opened = OpenAIModel(config)
    yield opened
    await opened.close()


class Deltas:
    """An `on_text` that records what it gets; `reached` is set after `expect` deltas."""

    def __init__(self, expect: int = 0) -> None:
        self.got: list[str] = []
        self.expect = expect
        self.reached = asyncio.Event()

    async def __call__(self, delta: str) -> None:
        self.got.append(delta)
        if len(self.got) >= self.expect:
            self.reached.set()


async def test_deltas_arrive_while_the_completion_is_still_streaming(
    endpoint: FakeEndpoint, model: OpenAIModel
) -> None:
    text = text_chunks(PLAN)
    endpoint.replies.append(
        Stream(
            chunks=[*text, *call_chunks(0, "call_a", WRITE_FILE, INDEX_ARGS), finish("tool_calls")],
            hold_after=len(text),  # the text is out; the tool call is not
        )
    )
    deltas = Deltas(expect=len(text))
    turn = asyncio.create_task(model.next_turn("build a calculator", [], on_text=deltas))
    await asyncio.wait_for(endpoint.held.wait(), WAIT)  # the server holds the rest back
    await asyncio.wait_for(deltas.reached.wait(), WAIT)  # yet every text delta is here
    assert not turn.done()
    assert deltas.got == split(PLAN, 3)
    endpoint.resume.set()
    answered = await asyncio.wait_for(turn, WAIT)
    assert answered.text == PLAN == "".join(deltas.got)
    assert [call.call_id for call in answered.tool_calls] == ["call_a"]


async def test_a_stream_cut_after_some_text_is_not_asked_again(
    endpoint: FakeEndpoint, model: OpenAIModel
) -> None:
    text = text_chunks(SUMMARY, parts=2)
    endpoint.replies.append(Stream(chunks=[*text, finish("stop")], hold_after=1, cut=True))
    endpoint.resume.set()
    deltas = Deltas()
    with pytest.raises(ModelError, match="ended before the completion did") as caught:
        await asyncio.wait_for(model.next_turn("x", [], on_text=deltas), WAIT)
    assert caught.value.retryable  # the caller decides; the builder fails the execution
    assert deltas.got == split(SUMMARY, 2)[:1]
    assert len(endpoint.requests) == 1  # asking again would repeat the text already out


async def test_an_error_of_the_sink_ends_the_turn_as_it_is(
    endpoint: FakeEndpoint, model: OpenAIModel
) -> None:
    endpoint.replies.append(Stream(chunks=[*text_chunks(SUMMARY), finish("stop")]))

    async def refuse(delta: str) -> None:
        raise Unavailable("chat is down")

    with pytest.raises(Unavailable, match="chat is down"):
        await asyncio.wait_for(model.next_turn("x", [], on_text=refuse), WAIT)
    assert len(endpoint.requests) == 1
