"""A turn's text streams into the flow while the model generates it: the builder's runner on
a real store (both backends) writing to a fake chat that applies pieces as chat does, then
one build through the real chat service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appforge.api.builder.v1 import builder_pb2
from appforge.services.builder.domain import ExecutionStatus, MessageStatus, clip_text
from appforge.services.builder.models.base import Exchange, Model, TextSink, Turn
from appforge.services.builder.models.openai import OpenAIConfig, OpenAIModel
from appforge.services.builder.models.scripted import ScriptedModel
from appforge.services.builder.models.templates import CALCULATOR
from appforge.services.common.flow import ItemKind
from appforge.services.common.settings import Limits, Settings
from tests.integration.builder_fixtures import collect, running_builder
from tests.integration.builder_service_helpers import assert_ordered, assistant_messages, build
from tests.integration.builder_streaming_fakes import (
    FedModel,
    RecordingModel,
    contiguous,
    streaming_builder,
)
from tests.integration.conftest import ChatHandle, NewApp
from tests.manual_time import ManualTime
from tests.openai_endpoint import PLAN, FakeEndpoint, calculator_replies, serving, split

Backend = tuple[str, str, str | None]
NEVER = 3_600_000.0  # ms: a flush interval no test waits for


async def test_each_text_streams_in_pieces_from_offset_0_and_its_batch_comes_after(
    backend: Backend, tmp_path: Path
) -> None:
    model = RecordingModel(ScriptedModel())
    async with streaming_builder(
        backend[1], tmp_path, {"scripted": model}, stream_flush_ms=NEVER, stream_flush_chars=16
    ) as builder:
        run = await builder.start()
        finished = await run.finished()
        execution = await builder.runtime.service.store.get(run.execution_id)
    assert finished.status is ExecutionStatus.SUCCEEDED, finished.error
    chat = builder.chat
    texts = sorted(seq for seq, kind in chat.kinds.items() if kind is ItemKind.MESSAGE)
    assert texts == [1, 3, 5] and execution.last_seq == 5
    assert [chat.texts[seq] for seq in texts] == model.texts  # every text whole
    for seq in texts:
        pieces = chat.pieces(seq)
        assert len(pieces) > 1 and contiguous(pieces)
        assert all(len(p.text) >= 16 for p in pieces[:-1])  # written once 16 chars waited
        assert len({(p.timestamp_us, p.seq) for p in pieces}) == 1  # one item, one stamp
    for text_seq in (1, 3):  # the batch: the next seq, written after the text's last piece
        tools, text = chat.pieces(text_seq + 1)[0], chat.pieces(text_seq)[0]
        assert tools.kind is ItemKind.TOOLS
        assert chat.index_of_first(text_seq + 1) > chat.index_of_last(text_seq)
        assert tools.timestamp_us is not None and text.timestamp_us is not None
        assert tools.timestamp_us > text.timestamp_us
    # The Build stream carried each write's items, chat first.
    assert run.items == [item for write in chat.writes for item in write.items]


async def test_pieces_wait_for_the_interval_on_a_manual_clock(
    backend: Backend, tmp_path: Path
) -> None:
    time, model = ManualTime(), FedModel()
    async with streaming_builder(
        backend[1], tmp_path, {"scripted": model}, sleep=time.sleep, stream_flush_ms=50
    ) as builder:
        run = await builder.start()
        await model.feed("Hello")
        await model.feed(",")
        await time.until_sleeping()
        assert time.slept == [0.05] and 1 not in builder.chat.texts  # waiting, not written
        await model.feed(" world")
        time.advance(0.05)
        await builder.chat.until_text(1, "Hello, world")
        await model.feed("!")
        await model.end()  # the turn is over: the rest goes at once, before the batch
        finished = await run.finished()
    assert finished.status is ExecutionStatus.SUCCEEDED, finished.error
    chat = builder.chat
    assert [(p.text, p.text_offset) for p in chat.pieces(1)] == [("Hello, world", 0), ("!", 12)]
    assert chat.kinds[2] is ItemKind.TOOLS and chat.index_of_first(2) > chat.index_of_last(1)
    assert chat.texts[3] == "Done."


async def test_a_model_error_mid_stream_fails_the_execution_and_keeps_the_text(
    backend: Backend, tmp_path: Path
) -> None:
    model = FedModel()
    async with streaming_builder(
        backend[1], tmp_path, {"scripted": model}, stream_flush_ms=NEVER
    ) as builder:
        run = await builder.start()
        await model.feed("I'll write")
        await model.feed(" the page")
        await model.fail("the connection dropped")
        finished = await run.finished()
    assert finished.status is ExecutionStatus.FAILED
    assert finished.error == "the model failed: the connection dropped"
    chat = builder.chat
    assert chat.texts == {1: "I'll write the page"}  # kept, though no flush was due
    final = chat.writes[-1]
    assert final.status is MessageStatus.FAILED and chat.index_of_last(1) < len(chat.writes) - 1
    assert builder.deployer.calls == []


async def test_the_openai_models_deltas_become_the_pieces(backend: Backend, tmp_path: Path) -> None:
    async with serving(FakeEndpoint(replies=calculator_replies())) as endpoint:
        model = OpenAIModel(OpenAIConfig(base_url=endpoint.base_url, api_key="k", model="m"))
        models: dict[str, Model] = {"scripted": ScriptedModel(), "openai": model}
        try:
            async with streaming_builder(
                backend[1], tmp_path, models, stream_flush_ms=NEVER, stream_flush_chars=1
            ) as builder:
                run = await builder.start(model="openai")
                finished = await run.finished()
        finally:
            await model.close()
    assert finished.status is ExecutionStatus.SUCCEEDED, finished.error
    pieces = builder.chat.pieces(1)
    assert [p.text for p in pieces] == split(PLAN, 3) and contiguous(pieces)
    [deploy] = builder.deployer.calls
    assert deploy["files"]["app.js"] == CALCULATOR.app_js.encode()


class Chatty:
    """Streams a long text a word at a time, then stops."""

    name = "scripted"
    TEXT = " ".join(f"word{n}" for n in range(40))

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn:
        assert on_text is not None
        for word in self.TEXT.split(" "):
            await on_text(word + " ")
        return Turn(text=self.TEXT + " ")


async def test_a_streamed_text_over_the_limit_is_clipped_as_a_whole_one_would_be(
    backend: Backend, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, limits=Limits(max_text_bytes=50))
    async with streaming_builder(
        backend[1],
        tmp_path,
        {"scripted": Chatty()},
        settings=settings,
        stream_flush_ms=NEVER,
        stream_flush_chars=4,
    ) as builder:
        run = await builder.start()
        await run.finished()  # it wrote no file: FAILED, which does not matter here
    assert builder.chat.texts[1] == clip_text(Chatty.TEXT + " ", 50)
    assert len(builder.chat.texts[1].encode()) <= 50 and contiguous(builder.chat.pieces(1))


async def test_text_streamed_through_the_real_chat_lands_whole_on_the_message(
    backend: Backend, chat: ChatHandle, new_app: NewApp, tmp_path: Path
) -> None:
    # Goes through the chat service itself: its appends at an offset must take every piece.
    model = RecordingModel(ScriptedModel())
    async with running_builder(
        database_url=backend[1],
        chat_address=chat.address,
        tmp=tmp_path,
        models={"scripted": model},
        stream_flush_ms=NEVER,
        stream_flush_chars=8,
    ) as handle:
        app = await new_app()
        events = await collect(handle.stub.Build(build(app.id)))
    assert events[-1].finished.status == builder_pb2.EXECUTION_STATUS_SUCCEEDED
    [message] = await assistant_messages(chat, app.id)
    assert_ordered(message)
    shown = [item.message.text for item in message.flow if item.HasField("message")]
    assert shown == model.texts
    streamed: dict[int, str] = {}
    for event in events:
        if event.HasField("item") and event.item.HasField("message"):
            piece = event.item
            assert piece.message.offset == len(streamed.get(piece.seq, "")), piece
            streamed[piece.seq] = streamed.get(piece.seq, "") + piece.message.text
    assert list(streamed.values()) == model.texts
    assert len([e for e in events if e.HasField("item") and e.item.HasField("message")]) > 9
