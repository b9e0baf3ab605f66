"""A builder service on a real store with a fake chat, for the streamed-text tests: the chat
applies text pieces the way the real one does and records every write; models stream text
the way the tests need."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appforge.cli import installed
from appforge.services.builder.bootstrap import BuilderRuntime, build_builder
from appforge.services.builder.domain import (
    BuildEvent,
    BuildFinished,
    BuildItem,
    BuildStarted,
    MessageStatus,
)
from appforge.services.builder.models.base import (
    WRITE_FILE,
    Exchange,
    Model,
    ModelError,
    TextSink,
    ToolRequest,
    Turn,
)
from appforge.services.builder.ports import UserMessage
from appforge.services.builder.service import BuildInput
from appforge.services.builder.settings import BuilderSettings
from appforge.services.builder.text_stream import Sleep
from appforge.services.common import db, migrate
from appforge.services.common.errors import FailedPrecondition
from appforge.services.common.flow import FlowItem, ItemKind
from appforge.services.common.settings import Settings
from tests.integration.builder_fixtures import RecordingDeployer

WAIT = 20.0


@dataclass(frozen=True, kw_only=True)
class Write:
    """One UpsertAssistantMessage as the fake chat received it."""

    items: tuple[FlowItem, ...]
    status: MessageStatus | None
    metadata: Mapping[str, Any] | None


@dataclass(kw_only=True)
class StreamingChat:
    """A ChatPort keeping one message: text items grow by the piece at its offset, with
    chat's rules (a replay changes nothing; a piece past the end, or one that disagrees
    with the text, is FAILED_PRECONDITION and nothing is written)."""

    writes: list[Write] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, ItemKind] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def post_user_message(self, *, app_id: str, content: str, request_id: str) -> UserMessage:
        return UserMessage(id="user-message", app_id=app_id, content=content)

    async def team_of(self, app_id: str) -> str:
        return "streaming-team"

    async def user_message(self, message_id: str) -> UserMessage:
        raise AssertionError("not used")

    async def upsert(
        self,
        *,
        app_id: str,
        execution_id: str,
        items: Sequence[FlowItem] = (),
        status: MessageStatus | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        texts = dict(self.texts)
        for item in items:
            assert self.kinds.setdefault(item.seq, item.kind) is item.kind, item
            if item.kind is ItemKind.MESSAGE:
                texts[item.seq] = _grown(texts.get(item.seq, ""), item)
        self.texts = texts
        async with self.changed:
            self.writes.append(Write(items=tuple(items), status=status, metadata=metadata))
            self.changed.notify_all()
        return "assistant-message"

    def pieces(self, seq: int) -> list[FlowItem]:
        """The pieces of text item `seq`, in the order they were written."""
        return [i for w in self.writes for i in w.items if i.seq == seq]

    def index_of_first(self, seq: int) -> int:
        """The number of the first write that carried item `seq`."""
        return next(n for n, w in enumerate(self.writes) if any(i.seq == seq for i in w.items))

    def index_of_last(self, seq: int) -> int:
        """The number of the last write that carried item `seq`."""
        return max(n for n, w in enumerate(self.writes) if any(i.seq == seq for i in w.items))

    async def until_text(self, seq: int, text: str) -> None:
        async with asyncio.timeout(WAIT), self.changed:
            await self.changed.wait_for(lambda: self.texts.get(seq) == text)


def _grown(stored: str, item: FlowItem) -> str:
    if item.text_offset > len(stored):
        raise FailedPrecondition(f"appends at {item.text_offset}, past {len(stored)}")
    overlap = stored[item.text_offset : item.text_end]
    if item.text[: len(overlap)] != overlap:
        raise FailedPrecondition("disagrees with the stored text")
    return stored + item.text[len(overlap) :]


def contiguous(pieces: Sequence[FlowItem]) -> bool:
    """Whether each piece starts where the one before ended, the first at 0."""
    ends = [0] + [piece.text_end for piece in pieces]
    return [piece.text_offset for piece in pieces] == ends[:-1]


@dataclass(kw_only=True)
class Run:
    """A started execution: its events so far, and the way to wait for its end."""

    queue: asyncio.Queue[BuildEvent]
    events: list[BuildEvent] = field(default_factory=list)

    async def finished(self) -> BuildFinished:
        async with asyncio.timeout(WAIT):
            while True:
                event = await self.queue.get()
                self.events.append(event)
                if isinstance(event, BuildFinished):
                    return event

    @property
    def execution_id(self) -> str:
        started = self.events[0]
        assert isinstance(started, BuildStarted), started
        return started.execution_id

    @property
    def items(self) -> list[FlowItem]:
        return [e.item for e in self.events if isinstance(e, BuildItem)]


@dataclass(kw_only=True)
class Streaming:
    runtime: BuilderRuntime
    chat: StreamingChat
    deployer: RecordingDeployer

    async def start(self, prompt: str = "build a calculator", model: str = "") -> Run:
        request = BuildInput(app_id=f"app-{uuid.uuid4().hex[:8]}", prompt=prompt, model=model)
        return Run(queue=await self.runtime.service.start(request))


@contextlib.asynccontextmanager
async def streaming_builder(
    database_url: str,
    tmp: Path,
    models: dict[str, Model],
    *,
    sleep: Sleep = asyncio.sleep,
    settings: Settings | None = None,
    **builder_settings: Any,
) -> AsyncIterator[Streaming]:
    """A builder service (no gRPC server) on `database_url` writing to a `StreamingChat`."""
    engine = db.create_engine(database_url)
    await migrate.upgrade(engine, installed.histories())
    chat, deployer = StreamingChat(), RecordingDeployer()
    runtime = build_builder(
        settings or Settings(data_dir=tmp),
        dataclasses.replace(BuilderSettings(team_max_running=100_000), **builder_settings),
        host="127.0.0.1",
        port=0,
        engine=engine,
        chat=chat,
        deployer=deployer,
        models=models,
        owner="builder-stream-test",
        sleep=sleep,
    )
    try:
        yield Streaming(runtime=runtime, chat=chat, deployer=deployer)
    finally:
        await runtime.close()


class RecordingModel:
    """Wraps a model and keeps the text of every turn it answered."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn:
        turn = await self.inner.next_turn(prompt, history, on_text=on_text)
        self.texts.append(turn.text)
        return turn


class FedModel:
    """Streams the pieces the test feeds it, one turn writing a file, then says "Done.".

    `feed(piece)` returns once the piece went through `on_text`; `end()` ends the turn;
    `fail(message)` makes it raise a ModelError instead.
    """

    name = "scripted"

    def __init__(self) -> None:
        self._pieces: asyncio.Queue[tuple[str | None, str, asyncio.Event]] = asyncio.Queue()

    async def feed(self, piece: str) -> None:
        await self._put(piece, "")

    async def end(self) -> None:
        await self._put(None, "")

    async def fail(self, message: str) -> None:
        await self._put(None, message)

    async def _put(self, piece: str | None, error: str) -> None:
        taken = asyncio.Event()
        self._pieces.put_nowait((piece, error, taken))
        await asyncio.wait_for(taken.wait(), WAIT)

    async def next_turn(
        self, prompt: str, history: Sequence[Exchange], *, on_text: TextSink | None = None
    ) -> Turn:
        if history:
            return Turn(text="Done.")
        assert on_text is not None
        text = ""
        while True:
            piece, error, taken = await self._pieces.get()
            if piece is None:
                taken.set()
                if error:
                    raise ModelError(error, retryable=True)
                break
            await on_text(piece)
            text += piece
            taken.set()
        call = ToolRequest(
            call_id="w0", name=WRITE_FILE, arguments={"path": "index.html", "content": "<p>hi</p>"}
        )
        return Turn(text=text, tool_calls=(call,))
